"""``python -m server_config.model build|wrap|quantize|stamp``: write a model that honours the serving contract.

``build`` and ``wrap`` never replace an existing file (perhaps a user's wrapped trained
model) without ``--force``. Written into a model repository other than the project's own,
they also write the model's parameters into its configs (``server_config/model/repository.py``);
``stamp`` does only that, for a model folder filled by hand. ``quantize`` writes an INT8 copy
of a contract model only when it agrees with the float model (``server_config/model/quantize.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from client.contract import DEFAULT_IMGSZ, DETECTIONS, NMS, NmsSettings
from client.errors import FramestreamError, UsageError

from .paths import default_model_path
from .quantize import DEFAULT_CHECK_FRAMES, DEFAULT_FRAMES, DEFAULT_MIN_F1

log = logging.getLogger("server_config.model")


def _parser(prog: str = "python -m server_config.model") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build YOLOv8 (untrained, seeded weights) in the contract")
    b.add_argument("--size", default="n", choices=["n", "s", "m"], help="model scale (default: n)")
    b.add_argument("--imgsz", type=int, default=DEFAULT_IMGSZ, help="model size, long side limit (default: 640)")
    b.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    w = sub.add_parser("wrap", help="wrap an ultralytics YOLOv8/YOLO11/YOLOv5 ONNX export in the contract")
    w.add_argument("export", type=Path, help="the exported .onnx file")
    q = sub.add_parser("quantize", help="an INT8 copy of a contract model, calibrated on your videos, "
                                        "written only if it agrees with the float model")
    q.add_argument("model", type=Path, help="the contract model (built or wrapped) to quantise")
    q.add_argument("--calibrate", type=Path, required=True, metavar="DIR",
                   help="videos to sample frames from (calibration, and others held out for the agreement)")
    q.add_argument("--min-f1", type=float, default=DEFAULT_MIN_F1,
                   help=f"refuse to write a model whose boxes agree less with the float model's (default: {DEFAULT_MIN_F1})")
    q.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help=f"calibration frames (default: {DEFAULT_FRAMES})")
    q.add_argument("--check-frames", type=int, default=DEFAULT_CHECK_FRAMES,
                   help=f"held-out frames the agreement is measured on (default: {DEFAULT_CHECK_FRAMES})")
    default_out = default_model_path()  # the model client.bulk uses when given none
    for command in (b, w):
        command.add_argument("--out", type=Path, default=default_out, help=f"output file (default: {default_out})")
    q.add_argument("--out", type=Path, default=None, help="output file (default: MODEL's name with .int8.onnx)")
    for command in (b, w, q):
        command.add_argument("--force", action="store_true", help="replace an existing model at --out")
    for command in (b, w):  # quantize keeps the float model's NMS settings
        command.add_argument("--conf", type=float, default=NMS.conf_thres,
                             help=f"keep detections scoring above this (default: {NMS.conf_thres:g}); "
                             "client.bulk --conf can only raise it")
        command.add_argument("--iou", type=float, default=NMS.iou_thres,
                             help=f"NMS IoU threshold (default: {NMS.iou_thres:g}; not for an nms=True export)")
        command.add_argument("--max-det", type=int, default=NMS.max_det,
                             help=f"detections per frame at most, 1-{DETECTIONS.dims[0]} (default: {NMS.max_det})")
    s = sub.add_parser("stamp", help="write a model folder's parameters (size, names, digest) into its configs")
    s.add_argument("model_dir", type=Path, help="the model's folder in a Triton repository, e.g. /models/yolo")
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m server_config.model") -> int:
    args = _parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "stamp":
            _stamp(args.model_dir)
        else:
            _write(args)
    except FramestreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _write(args: argparse.Namespace) -> None:
    from .files import save_onnx_atomically
    from .repository import repository_model_dir

    if args.command == "quantize" and args.out is None:
        args.out = args.model.with_name(f"{args.model.stem}.int8.onnx")
    nms = nms_settings(args.conf, args.iou, args.max_det) if args.command != "quantize" else None
    if (args.out.exists() or args.out.is_symlink()) and not args.force:
        raise UsageError(f"{args.out} already exists; pass --force to replace it")
    if args.command == "build":
        from .build import build_model

        model = build_model(size=args.size, imgsz=args.imgsz, seed=args.seed, nms=nms)
    elif args.command == "quantize":
        from .quantize import quantize_file

        model, agreement = quantize_file(args.model, args.calibrate, min_f1=args.min_f1, frames=args.frames,
                                         check_frames=args.check_frames)
        log.info("%s", agreement.describe())
    else:
        from .wrap import wrap_file

        model = wrap_file(args.export, nms=nms)
    save_onnx_atomically(model, args.out)
    log.info("wrote %s (%s)", args.out, next(p.value for p in model.metadata_props if p.key == "source"))
    model_dir = repository_model_dir(args.out)
    if model_dir is not None:
        _stamp(model_dir)


def nms_settings(conf: float, iou: float, max_det: int) -> NmsSettings:
    """The post-processing ``--conf``, ``--iou`` and ``--max-det`` ask for, checked against the contract."""
    if not 0 <= conf < 1:
        raise UsageError(f"--conf must be in [0, 1), got {conf:g}")
    if not 0 < iou <= 1:
        raise UsageError(f"--iou must be in (0, 1], got {iou:g}")
    if not 1 <= max_det <= DETECTIONS.dims[0]:
        raise UsageError(f"--max-det must be 1-{DETECTIONS.dims[0]} (the contract's rows per frame), got {max_det}")
    return NmsSettings(conf_thres=conf, iou_thres=iou, max_det=max_det)


def _stamp(model_dir: Path) -> None:
    from .repository import stamp_model_dir

    written = stamp_model_dir(model_dir)
    if not written:
        raise UsageError(f"{model_dir}: its latest model.onnx is not a framestream model; "
                         "wrap it with 'python -m server_config.model wrap'")
    log.info("wrote the served model's parameters into %s", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    sys.exit(main())
