"""python -m client.bulk DIR: run a YOLO detector over every video under DIR.

Exit codes: 0 every video ok; 1 usage error (bad DIR, missing model, bad option);
2 the run finished but some videos failed (see summary.json); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .decode import Sampling
from .errors import FramestreamError, UsageError
from .pipeline import PipelineConfig
from .report import ERROR, print_table, totals, write_summary

log = logging.getLogger("client.bulk")

EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_OUT = Path("framestream-out")


def _default_model() -> Path:
    from server_config.model.paths import DEFAULT_MODEL_PATH

    return DEFAULT_MODEL_PATH


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m client.bulk",
        description="Run a YOLO detector over every video under DIR (recursively); "
        "write one OUT/<video>.jsonl per video and OUT/summary.json.",
        epilog="Exit codes: 0 all videos ok; 1 usage error; 2 finished, but some videos failed; 130 interrupted.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dir", type=Path, metavar="DIR", help="directory of videos (searched recursively)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--model", type=Path, default=None,
                   help="contract ONNX model (default: model_repository/yolo/1/model.onnx, built if missing)")
    p.add_argument("--batch", type=int, default=8, help="frames per inference batch (formed across videos)")
    sample = p.add_mutually_exclusive_group()
    sample.add_argument("--every", type=int, default=1, metavar="N", help="infer frames 0, N, 2N, ...")
    sample.add_argument("--fps", type=float, default=None, metavar="F",
                        help="infer the frame nearest each point of a 1/F-second grid")
    sample.add_argument("--keyframes", action="store_true", help="infer key frames only (others are not decoded)")
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl",
                   help="jsonl: a file per video; parquet: one dataset OUT/detections/ (needs pyarrow)")
    p.add_argument("--workers", type=int, default=1, help="videos decoded at once")
    p.add_argument("--sessions", type=int, default=None,
                   help="embedded backend: onnxruntime sessions (1 thread each); default: CPU cores")
    p.add_argument("--square", action="store_true",
                   help="letterbox to the model's full square even when it takes smaller rectangles")
    p.add_argument("--overwrite", action="store_true", help="redo videos whose outputs are already complete")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a live progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s"
                        if verbose else "%(message)s", stream=sys.stderr)
    for noisy in ("libav", "av"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _check_args(args: argparse.Namespace) -> None:
    if not args.dir.is_dir():
        raise UsageError(f"{args.dir}: not a directory; give the directory that holds your videos")
    for name in ("batch", "every", "workers"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.fps is not None and args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps:g}")
    if args.sessions is not None and args.sessions < 1:
        raise UsageError(f"--sessions must be at least 1, got {args.sessions}")
    out = args.out.resolve()
    if out == args.dir.resolve() or args.dir.resolve() in out.parents:
        pass  # outputs under DIR are fine: hidden temp names and .jsonl files are not videos


def _resolve_model(path: Path | None) -> Path:
    if path is not None:
        if not path.is_file():
            raise UsageError(f"{path}: no such model; build one with 'python -m server_config.model build --out {path}'")
        return path
    default = _default_model()
    if not default.is_file():
        log.info("no model at %s: building the default (YOLOv8n, untrained weights; see README to bring yours)", default)
        from server_config.model.build import build_model
        from server_config.model.files import save_onnx_atomically

        save_onnx_atomically(build_model(), default)
    return default


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return _run(args)
    except UsageError as e:
        log.error("error: %s", e)
        return EXIT_USAGE
    except FramestreamError as e:  # model or server problems found before any file was touched
        log.error("error: %s", e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("interrupted: complete outputs were kept, partial ones are marked .partial; rerun to resume")
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from .infer.embedded import EmbeddedBackend
    from .resume import ResumeLedger, fingerprint
    from .run import RunOptions, run_bulk
    from .sinks import make_sink

    _check_args(args)
    sampling = Sampling(every=args.every, fps=args.fps, keyframes=args.keyframes)
    model_path = _resolve_model(args.model)
    sink = make_sink(args.format, args.out)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {args.out}: {e.strerror}") from e
    backend = EmbeddedBackend(model_path, sessions=args.sessions)
    config = PipelineConfig(batch=args.batch, workers=args.workers, square=args.square, sampling=sampling)
    options = {"sampling": sampling.describe(), "square": args.square, "format": args.format}
    ledger = ResumeLedger(args.out, fingerprint(model_path, options))
    run = RunOptions(args.dir, args.out, config, overwrite=args.overwrite, progress=False if args.no_progress else None)
    log.info("embedded onnxruntime: %d session(s); model %s (%s)", backend.lanes, model_path, backend.model.source)
    start = time.monotonic()
    try:
        files = run_bulk(run, backend, sink, ledger)
    finally:
        backend.close()
    wall = time.monotonic() - start
    summary_totals = totals(files, wall)
    write_summary(args.out, {
        "files": [f.to_json() for f in files],
        "totals": summary_totals,
        "model": {"path": str(model_path), **backend.model.to_summary()},
        "options": {**options, "batch": args.batch, "workers": args.workers, "backend": "embedded"},
    })
    print_table(files, summary_totals, sys.stderr)
    return EXIT_FAILED if any(f.status == ERROR for f in files) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
