"""A rerun's check of complete outputs: time and bytes read, hashing every output against comparing identities.

    python -m benchmarks.rerun_check [--outputs 10000] [--frames 300] [--rounds 3] [--dir DIR]

Writes OUTPUTS complete JSON-lines outputs and their resume records through the real code path
(``JsonlSink`` writers completed with ``ResumeLedger.stage``, as a run's collector completes a
video; FRAMES frames with a box each, so an output is about FRAMES x 80 bytes), reused when
already there. Then, in a fresh process per measurement, the check a rerun makes before any
work (``ResumeLedger.check`` for every video, what ``client.triage`` calls) in two ways:

- ``hash every output``: ``--verify``, which reads and SHA-256s every output, as every rerun did
  before identities were recorded (b5d07fc and earlier);
- ``compare identities``: the default now, an ``fstat`` of each output compared with the size,
  mtime, ctime and inode recorded once it was in place.

Bytes read are the process's ``rchar`` from /proc/self/io over the check alone (every read()
call, page cache or not: the records' bytes are in it too, and their total is printed beside).
The outputs were just written, so the page cache holds them: hashing reads from memory here,
its best case; from a cold disk it is slower still. Rounds alternate the two ways. Writes
benchmarks/results/rerun_check.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import WORK, table, write_result

MODEL_DIGEST = "benchmark-model"
OPTIONS = {"sampling": "every 1", "square": False, "format": "jsonl"}


def rel(i: int) -> str:
    return f"cam{i // 1000:02d}/v{i:05d}.mp4"


def make_outputs(out: Path, count: int, frames: int) -> Path:
    """``count`` complete outputs with their records under ``out``; the one source file they share."""
    import numpy as np

    from client.detections import Detections
    from client.resume import ResumeLedger
    from client.sinks import JsonlSink

    source = out.parent / "source.mp4"
    out.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        source.write_bytes(b"stands in for a video; the check only stats it")
    box = Detections(np.array([[10.5, 20.25, 300.75, 200.5]], np.float32), np.array([0.875], np.float32),
                     np.array([3], np.int32))
    sink, ledger = JsonlSink(out), ResumeLedger(out, MODEL_DIGEST, OPTIONS)
    for i in range(count):
        name = rel(i)
        if ledger.check(source, name, sink.outputs(name)).complete:
            continue  # made by an earlier call
        writer = sink.open(name)
        for f in range(frames):
            writer.write(f, f / 30, box)
        writer.complete([lambda outputs, name=name: ledger.stage(source, name, frames, outputs)])
        if (i + 1) % 1000 == 0:
            print(f"made {i + 1} of {count} outputs", file=sys.stderr)
    return source


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def check_once(out: Path, source: Path, count: int, verify: bool) -> dict[str, float]:
    """The rerun's check of ``count`` outputs in this process: seconds, bytes read, verdicts complete."""
    import time

    from client.resume import ResumeLedger
    from client.sinks import JsonlSink

    sink, ledger = JsonlSink(out), ResumeLedger(out, MODEL_DIGEST, OPTIONS, verify=verify)
    names = [rel(i) for i in range(count)]
    before, t0, cpu0 = _rchar(), time.perf_counter(), time.process_time()
    complete = sum(ledger.check(source, name, sink.outputs(name)).complete for name in names)
    seconds, cpu, read = time.perf_counter() - t0, time.process_time() - cpu0, _rchar() - before
    return {"seconds": seconds, "cpu": cpu, "bytes": read, "complete": complete, "load": os.getloadavg()[0]}


def measure(out: Path, source: Path, count: int, verify: bool) -> dict[str, float]:
    code = ("import json, sys; from pathlib import Path; from benchmarks.rerun_check import check_once; "
            f"print(json.dumps(check_once(Path({str(out)!r}), Path({str(source)!r}), {count}, {verify})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def total_size(root: Path, suffix: str) -> tuple[int, int]:
    sizes = [p.stat().st_size for p in root.rglob(f"*{suffix}") if p.is_file()]
    return len(sizes), sum(sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=300, help="frames (lines) in each output")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=WORK / "rerun_check", help="where the outputs are made (kept)")
    args = ap.parse_args()
    out = args.dir / f"out_{args.outputs}x{args.frames}"
    source = make_outputs(out, args.outputs, args.frames)
    n_out, out_bytes = total_size(out, ".jsonl")
    n_rec, rec_bytes = total_size(out / ".framestream" / "done", ".json")
    rows, runs = [], {False: [], True: []}
    for r in range(args.rounds):
        for verify in (True, False):
            m = measure(out, source, args.outputs, verify)
            assert m["complete"] == args.outputs, m
            runs[verify].append(m)
            rows.append([r + 1, "hash every output (--verify; b5d07fc's check)" if verify else "compare identities",
                         f"{m['seconds']:.3f}", f"{m['cpu']:.3f}", f"{m['load']:.1f}", f"{m['bytes']:,}",
                         f"{m['bytes'] - rec_bytes:,}"])
    best = {v: min(runs[v], key=lambda m: m["seconds"]) for v in runs}
    cpu = {v: min(m["cpu"] for m in runs[v]) for v in runs}
    body = "\n\n".join([
        f"{n_out:,} complete outputs, {out_bytes:,} bytes in all ({out_bytes / max(n_out, 1) / 1024:.1f} KiB each); "
        f"{n_rec:,} records, {rec_bytes:,} bytes. Every check found every output complete. Page cache warm "
        "(the outputs were written just before): hashing's best case.",
        table(["round", "check", "seconds", "CPU seconds", "load average", "bytes read (rchar)",
               "bytes read beyond the records"], rows),
        f"Best of {args.rounds}: hashing {best[True]['seconds']:.3f} s and {best[True]['bytes']:,} bytes; "
        f"comparing identities {best[False]['seconds']:.3f} s and {best[False]['bytes']:,} bytes "
        f"({best[True]['seconds'] / max(best[False]['seconds'], 1e-9):.1f}x faster); least CPU time {cpu[True]:.3f} s "
        f"against {cpu[False]:.3f} s. \"Beyond the records\" is /proc/self/io itself (read to take the count). "
        "Seconds are wall-clock: on a machine whose load average is above its cores they include the wait for a "
        "core; CPU seconds do not.",
    ])
    write_result("rerun_check", f"A rerun's check of {args.outputs:,} complete outputs", body)


if __name__ == "__main__":
    main()
