"""``python -m server_config.model build|wrap|fetch|quantize|stamp``: write a model that honours the serving contract.

``fetch`` downloads a trained detector (its checksum pinned, its licence stated) and wraps it
as the default model (``server_config/model/fetch.py``). ``build``, ``wrap`` and ``fetch``
never replace an existing file (perhaps a user's wrapped trained model) without ``--force``,
except that ``wrap`` and ``fetch`` replace the untrained model ``build`` put at the default
place (``server_config/model/untrained.py``). Written into a model repository other than the project's own,
they also write the model's parameters into its configs (``server_config/model/repository.py``);
``stamp`` does only that, for a model folder filled by hand. ``quantize`` writes an INT8 copy
of a contract model that agrees with the float model, keeping its most sensitive convolutions
float where all-INT8 would not (``server_config/model/deliver.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from client.contract import DEFAULT_IMGSZ, DETECTIONS, NMS, NmsSettings
from client.commandline import EXIT_OK, Parser, configure_logging, exit_code, print_error, signals_interrupt
from client.errors import FramestreamError, UsageError

from .fetch import REGISTRY
from .paths import default_model_path
from .quantize import DEFAULT_CHECK_FRAMES, DEFAULT_FRAMES, DEFAULT_MIN_F1
from .untrained import is_untrained_file

log = logging.getLogger("server_config.model")


def _parser(prog: str = "python -m server_config.model") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)  # its parsers are Parsers too: a mistake exits 1
    b = sub.add_parser("build", help="build YOLOv8 (untrained, seeded weights) in the contract")
    b.add_argument("--size", default="n", choices=["n", "s", "m"], help="model scale (default: n)")
    b.add_argument("--imgsz", type=int, default=DEFAULT_IMGSZ, help="model size, long side limit (default: 640)")
    b.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    w = sub.add_parser("wrap", help="wrap an ultralytics YOLOv8/YOLO11/YOLOv5 ONNX export in the contract")
    w.add_argument("export", type=Path, help="the exported .onnx file")
    f = sub.add_parser("fetch", help="download a trained detector (pinned SHA-256, licence stated), wrap it "
                                     "and make it the default model")
    f.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help=f"the model to fetch: {', '.join(f'{e.name} ({e.about})' for e in REGISTRY.values())}")
    f.add_argument("--url", default=None,
                   help="download from this URL instead: a mirror of NAME (its pinned SHA-256 still decides), or, "
                   "with --sha256 and no NAME, your own export")
    f.add_argument("--sha256", default=None, metavar="HEX", help="the file's SHA-256 (needed with --url and no NAME)")
    q = sub.add_parser("quantize", help="an INT8 copy of a contract model, calibrated on your videos, "
                                        "its most sensitive layers kept float until it agrees with the float model")
    q.add_argument("model", type=Path, help="the contract model (built or wrapped) to quantise")
    q.add_argument("--calibrate", type=Path, required=True, metavar="DIR",
                   help="videos to sample frames from (calibration, and others held out for the agreement)")
    q.add_argument("--min-f1", type=float, default=DEFAULT_MIN_F1,
                   help="the agreement (F1 of boxes) with the float model to hold on the check frames, keeping layers "
                   f"float as needed (default: {DEFAULT_MIN_F1})")
    q.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                   help=f"calibration frames (default: {DEFAULT_FRAMES})")
    q.add_argument("--check-frames", type=int, default=DEFAULT_CHECK_FRAMES,
                   help=f"held-out frames the agreement is measured on (default: {DEFAULT_CHECK_FRAMES})")
    default_out = default_model_path()  # the model client.bulk uses when given none
    for command in (b, w, f):
        command.add_argument("--out", type=Path, default=default_out, help=f"output file (default: {default_out})")
    q.add_argument("--out", type=Path, default=None, help="output file (default: MODEL's name with .int8.onnx)")
    for command in (b, w, f, q):
        command.add_argument("--force", action="store_true", help="replace an existing model at --out")
    for command in (b, w, f):  # quantize keeps the float model's NMS settings
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


def main(argv: list[str] | None = None, *, prog: str = "python -m server_config.model",
         signals: bool | None = None) -> int:
    """The command line; returns its exit code (:mod:`client.commandline`: 1 when the command line,
    a path or a model cannot be used as given, 2 when a download or a quantisation failed, 128 + N
    on signal N). ``signals`` (default: as the program, ``argv`` None): whether Ctrl-C, SIGTERM and
    SIGHUP end it with one line; the model is written atomically, so nothing half-written is left."""
    listen = argv is None if signals is None else signals
    args = _parser(prog).parse_args(argv)
    configure_logging()
    try:
        with signals_interrupt(listen):
            if args.command == "stamp":
                _stamp(args.model_dir)
            else:
                _write(args)
    except FramestreamError as e:
        print_error(e)
        return exit_code(e)
    except KeyboardInterrupt as e:
        if not listen:
            raise
        print_error("interrupted; no model file was left half-written")
        return exit_code(e)
    return EXIT_OK


def _write(args: argparse.Namespace) -> None:
    from .files import save_onnx_atomically
    from .repository import repository_model_dir

    if args.command == "quantize" and args.out is None:
        args.out = args.model.with_name(f"{args.model.stem}.int8.onnx")
    nms = nms_settings(args.conf, args.iou, args.max_det) if args.command != "quantize" else None
    source = None
    if args.command == "fetch":
        from .fetch import resolve

        source = resolve(args.name, args.url, args.sha256)  # a usage mistake, before anything is downloaded
    if (args.out.exists() or args.out.is_symlink()) and not args.force:
        if args.command in ("wrap", "fetch") and replaceable_default(args.out):
            log.info("replacing the untrained built-in model at %s", args.out)
        else:
            raise UsageError(f"{args.out} already exists; pass --force to replace it")
    if args.command == "build":
        from .build import build_model

        model = build_model(size=args.size, imgsz=args.imgsz, seed=args.seed, nms=nms)
    elif args.command == "quantize":
        from .deliver import quantize_file

        delivered = quantize_file(args.model, args.calibrate, min_f1=args.min_f1, frames=args.frames,
                                  check_frames=args.check_frames)
        model = delivered.model
        log.info("%s", delivered.agreement.describe())
        log.info("%s", delivered.describe_mix())
        log.info("%s", delivered.speed.describe())
    elif args.command == "fetch":
        from .fetch import fetch_model

        model = fetch_model(source, args.out.parent, nms=nms)
    else:
        from .wrap import wrap_file

        model = wrap_file(args.export, nms=nms)
    save_onnx_atomically(model, args.out)
    log.info("wrote %s (%s)", args.out, next(p.value for p in model.metadata_props if p.key == "source"))
    if args.command in ("wrap", "fetch") and _same_path(args.out, default_model_path()):
        log.info("it is the default model now: 'python -m client.bulk DIR' uses it")
    model_dir = repository_model_dir(args.out)
    if model_dir is not None:
        _stamp(model_dir)


def replaceable_default(out: Path) -> bool:
    """Whether ``out`` is the untrained model ``build`` (or a run) put at the default place: the one
    file ``wrap`` and ``fetch`` replace without ``--force``."""
    return _same_path(out, default_model_path()) and not out.is_symlink() and out.is_file() and is_untrained_file(out)


def _same_path(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


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
