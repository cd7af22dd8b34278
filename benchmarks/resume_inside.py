"""A stop at half the frames: what the rerun infers when it continues the partial outputs, and
what it would infer redoing every unfinished video from frame 0 (as before partials were continued).

    python -m benchmarks.resume_inside [--videos 3] [--frames 480] [--gop 48] [--workers 3]

Generates VIDEOS H.264 clips (320x192, B-frames, a key frame every GOP frames), runs
``client.bulk`` over them uninterrupted (the reference outputs), then again stopped by a real
SIGTERM once half the frames are inferred (a count, through ``tests/resume_runner.py``, whose
backend counts the frames it infers), then reruns it twice from copies of that stopped
output: as it is (the partials continued) and with the partials' records removed (every video
redone from frame 0: what a rerun did before). Each run is embedded onnxruntime on the CPU with
the tests' model size 320, ``--no-split`` (files decoded side by side, so at half the frames no
video is complete). Writes benchmarks/results/resume_inside.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import WORK, ensure_model, make_clips, table, write_result

_HERE = Path(__file__).resolve().parent.parent


def _run(src: Path, out: Path, model: Path, work: Path, flags: list[str], *, stop_at: int | None = None) -> dict:
    """One run through the counting runner: frames inferred, wall seconds, exit code."""
    count = work / f"count-{time.monotonic_ns()}"
    hold: list[str] = []
    if stop_at is not None:
        ready, go = work / f"{count.name}.ready", work / f"{count.name}.go"
        hold = [str(ready), str(stop_at), str(go)]
    cmd = [sys.executable, "-m", "tests.resume_runner", str(count), *hold, "--", str(src), "--out", str(out),
           "--model", str(model), "--no-progress", *flags]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=_HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if stop_at is not None:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the run ended before its stop point: {proc.stderr.read()[-2000:]}")
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        while not Path(f"{ready}.stopped").exists():
            time.sleep(0.02)
        go.touch()
    _, stderr = proc.communicate()
    seconds = time.monotonic() - start
    if proc.returncode not in (0, 143):
        raise RuntimeError(f"client.bulk exited {proc.returncode}: {stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"rc": proc.returncode, "inferred": int(count.read_text()), "seconds": seconds,
            "wall": summary["totals"]["wall_seconds"], "kept": summary["totals"].get("frames_kept", 0),
            "last": stderr.strip().splitlines()[-1] if stderr.strip() else ""}


def _same(out: Path, reference: Path, names: list[str]) -> bool:
    return all((out / f"{n}.jsonl").read_bytes() == (reference / f"{n}.jsonl").read_bytes() for n in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--frames", type=int, default=480)
    p.add_argument("--gop", type=int, default=48)
    p.add_argument("--workers", type=int, default=3)
    args = p.parse_args()
    clips = make_clips(WORK / f"resume_inside_{args.gop}", count=args.videos, frames=args.frames,
                       size_wh=(320, 192), gop=args.gop)
    names = [c.name for c in clips]
    src = clips[0].parent
    model = ensure_model(320)
    flags = ["--workers", str(args.workers), "--no-split"]
    total = args.videos * args.frames
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        work = Path(tmp)
        full = _run(src, work / "full", model, work, flags)
        stopped = _run(src, work / "stopped", model, work, flags, stop_at=total // 2)
        partial = {n: len((work / "stopped" / f"{n}.jsonl.partial").read_bytes().splitlines()) for n in names}
        shutil.copytree(work / "stopped", work / "continued", symlinks=True)
        shutil.copytree(work / "stopped", work / "redone", symlinks=True)
        shutil.rmtree(work / "redone" / ".framestream" / "partial")  # no record: every video from frame 0
        continued = _run(src, work / "continued", model, work, flags)
        redone = _run(src, work / "redone", model, work, flags)
        bound = sum(args.frames - (n - 1) // args.gop * args.gop for n in partial.values())
        rows = [
            ["uninterrupted", full["inferred"], "-", f"{full['seconds']:.1f}", "reference"],
            ["stopped at half (SIGTERM)", stopped["inferred"], "-", f"{stopped['seconds']:.1f}",
             f"partials: {', '.join(str(v) for v in partial.values())} frames"],
            ["rerun, partials continued", continued["inferred"], continued["kept"], f"{continued['seconds']:.1f}",
             "byte-identical" if _same(work / "continued", work / "full", names) else "DIFFERENT"],
            ["rerun, every video from frame 0 (as before)", redone["inferred"], 0, f"{redone['seconds']:.1f}",
             "byte-identical" if _same(work / "redone", work / "full", names) else "DIFFERENT"],
        ]
        body = (f"{args.videos} H.264 clips of {args.frames} frames (320x192, 2 B-frames, a key frame every "
                f"{args.gop}), `--workers {args.workers} --no-split`: the files are decoded side by side, so at half "
                "the frames none is complete. Embedded onnxruntime on the CPU, YOLOv8n (untrained) at model size "
                "320. Frames inferred: counted by the backend itself (`tests/resume_runner.py`); seconds: the "
                "process's wall time, start-up included. The continued rerun may infer at most the frames from "
                f"each video's last key frame at or before its partial's end: {bound} here.\n\n"
                + table(["run", "frames inferred", "frames kept", "seconds", "outputs"], rows)
                + f"\n\nThe continued rerun's last line: `{continued['last'][:200]}`")
    write_result("resume_inside", "A stop at half the frames: continuing the partial outputs", body)


if __name__ == "__main__":
    main()
