"""``python -m server_config.model build|wrap``: write a model that honours the serving contract."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from client.contract import DEFAULT_IMGSZ
from client.errors import FramestreamError

from .paths import DEFAULT_MODEL_PATH

log = logging.getLogger("server_config.model")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m server_config.model", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build YOLOv8 (untrained, seeded weights) in the contract")
    b.add_argument("--size", default="n", choices=["n", "s", "m"], help="model scale (default: n)")
    b.add_argument("--imgsz", type=int, default=DEFAULT_IMGSZ, help="model size, long side limit (default: 640)")
    b.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    b.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH, help=f"output file (default: {DEFAULT_MODEL_PATH})")
    w = sub.add_parser("wrap", help="wrap an ultralytics YOLOv8/YOLO11/YOLOv5 ONNX export in the contract")
    w.add_argument("export", type=Path, help="the exported .onnx file")
    w.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH, help=f"output file (default: {DEFAULT_MODEL_PATH})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .files import save_onnx_atomically

    try:
        if args.command == "build":
            from .build import build_model

            model = build_model(size=args.size, imgsz=args.imgsz, seed=args.seed)
        else:
            from .wrap import wrap_file

            model = wrap_file(args.export)
        save_onnx_atomically(model, args.out)
    except FramestreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("wrote %s (%s)", args.out, next(p.value for p in model.metadata_props if p.key == "source"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
