"""Many small files: is the rate at the last thousand files the rate at the first?

    python -m benchmarks.many_files [--files 5000] [--imgsz 320] [--code DIR ...] [--name many_files]

Writes FILES one-frame H.264 clips (64x48) into one folder and runs ``python -m client.bulk``
over them once per ``--code`` checkout (default: this one; another, e.g. an older commit's
worktree, shows a regression or a fix side by side), embedded onnxruntime on the CPU with the
small model size the tests use. Each video's completion time is its output's mtime (the
output is renamed into place when the video completes), so the rate over each thousand
files is that thousand's frames over the time between its first and its last completion.

On a machine shared with other work the wall-clock rate moves with the load, so the run's
own CPU time (all its threads, from /proc, sampled every 0.2 s) is measured too: frames a
CPU second over each thousand is the per-file cost itself, and a step that grows with the
files done shows there as a falling figure whatever the load. "Spread": the largest block's
rate minus the smallest, as a percentage of the first's. Writes benchmarks/results/NAME.md.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import WORK, ensure_model, table, write_result

_HERE = Path(__file__).resolve().parent.parent
_BLOCK = 1000  # files per measured block
_SAMPLE_S = 0.2  # how often the run's CPU time is read


def make_files(count: int) -> Path:
    """``count`` one-frame clips, each a key frame; reused when already there."""
    from tests.videos import write_video

    folder = WORK / f"many_files_{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"f{i:05d}.mp4"
        if not path.exists():  # under a hidden temporary name: an interrupted run leaves no half clip
            tmp = folder / f".f{i:05d}.tmp.mp4"
            write_video(tmp, frames=1, size_wh=(64, 48), fps=30, gop=1)
            tmp.rename(path)
    return folder


def run(code: Path, src: Path, model: Path, out: Path) -> dict:
    """One run of the checkout at ``code`` (its own ``client``, imported first): its summary, the
    completion times of its outputs in order, and samples of (time, CPU seconds, load average)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model), "--overwrite",
           "--no-progress", "--device", "cpu"]
    samples: list[tuple[float, float, float]] = []
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        while proc.poll() is None:
            cpu = _cpu_seconds(proc.pid)
            if cpu is not None:
                samples.append((time.time(), cpu, os.getloadavg()[0]))
            time.sleep(_SAMPLE_S)
        log.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"client.bulk in {code} exited {proc.returncode}: {log.read()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    summary["finished"] = sorted(os.stat(out / o).st_mtime for f in summary["files"] for o in f["outputs"])
    summary["samples"] = samples
    return summary


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, every thread together."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _at(samples: list[tuple[float, float, float]], t: float) -> float:
    """CPU seconds at time ``t``, interpolated between the samples around it."""
    times = [s[0] for s in samples]
    i = min(max(bisect.bisect_left(times, t), 1), len(samples) - 1)
    (t0, c0, _), (t1, c1, _) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1


def block_rates(run: dict, block: int = _BLOCK) -> list[tuple[str, float, float, float]]:
    """Per block of ``block`` files (one frame each), first, middle and last: frames per second,
    frames a CPU second, and the machine's mean load average meanwhile."""
    finished, samples = run["finished"], run["samples"]
    n = len(finished)
    rows = []
    for name, s in (("first", 0), ("middle", (n - block) // 2), ("last", n - block)):
        t0, t1 = finished[s], finished[s + block - 1]
        load = [l for t, _, l in samples if t0 <= t <= t1] or [0.0]
        rows.append((f"{name} ({s + 1}-{s + block})", (block - 1) / (t1 - t0),
                     (block - 1) / (_at(samples, t1) - _at(samples, t0)), sum(load) / len(load)))
    return rows


def spread(values: list[float]) -> str:
    return f"spread {100 * (max(values) - min(values)) / values[0]:.0f}%"


def commit(code: Path) -> str:
    done = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (done.stdout.strip() or "?") + ("+changes" if dirty else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--imgsz", type=int, default=320, help="model size (the tests' small one)")
    p.add_argument("--code", type=Path, action="append", default=None,
                   help="a framestream checkout to run (repeatable; default: this one)")
    p.add_argument("--name", default="many_files", help="results file name (.md)")
    args = p.parse_args()
    if args.files < 3 * _BLOCK:
        raise SystemExit(f"--files must be at least {3 * _BLOCK} (three blocks of {_BLOCK})")
    src = make_files(args.files)
    model = ensure_model(args.imgsz)
    rows = []
    for code in args.code or [_HERE]:
        code = code.resolve()
        s = run(code, src, model, WORK / "many_files_out")
        blocks = block_rates(s)
        first_wall, first_cpu = blocks[0][1], blocks[0][2]
        for block, wall, cpu, load in blocks:
            rows.append([commit(code), block, wall, f"{100 * wall / first_wall:.0f}%", cpu,
                         f"{100 * cpu / first_cpu:.0f}%", load])
        rows.append([commit(code), f"whole run ({s['totals']['files']} files)", s["totals"]["fps"],
                     spread([b[1] for b in blocks]), "", spread([b[2] for b in blocks]), ""])
        print(rows[-4:], flush=True)
    headers = ["code", "files", "frames/s", "of the first", "frames a CPU second", "of the first",
               "load average"]
    note = (f"{args.files} one-frame 64x48 H.264 files in one folder; embedded onnxruntime on the CPU, "
            f"YOLOv8n at model size {args.imgsz}, default batch and workers. A block's frames/s: its frames over "
            "the time from its first to its last completion (outputs' mtimes); frames a CPU second: over the "
            "CPU time the run spent meanwhile (all threads); load average: the machine's (1 min), over the block. "
            "The whole run's frames/s is summary.json's. A per-file cost that grows with the files done shows in "
            "frames a CPU second, whatever else runs on the machine; frames/s also moves with the CPU the "
            f"machine's other work leaves the run ({os.cpu_count()} CPUs here).")
    write_result(args.name, "Many small files: the rate from the first file to the last", note + "\n\n" +
                 table(headers, rows))

if __name__ == "__main__":
    main()
