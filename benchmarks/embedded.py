"""Embedded (onnxruntime) bulk run against its ceiling, decode rates, and memory against file count.

    python -m benchmarks.embedded [--clips 4] [--frames 60]

Prints one markdown table and writes it to benchmarks/results/embedded.md. The ceiling is
the same backend (same sessions, same batch, same input shape) fed pre-made batches from
as many threads as it has lanes: what inference alone can do on this machine.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, ensure_model, make_clips, run_python, table, write_result
from client.decode import Sampling
from client.decode.pyav_source import PyAVSource
from client.infer.embedded import EmbeddedBackend
from client.letterbox import plan_letterbox

BATCH = 8


def bulk_fps(src: Path, model: Path, *extra: str) -> tuple[float, int]:
    """frames/s and peak RSS (MiB) of ``python -m client.bulk`` in a fresh interpreter."""
    out = WORK / "out"
    code = (
        "import json,resource,sys,time;from client import bulk;t=time.monotonic();"
        "rc=bulk.main(sys.argv[1:]);"
        "print(json.dumps({'rc':rc,'rss':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))"
    )
    result = json.loads(run_python(code, str(src), "--out", str(out), "--model", str(model), "--overwrite",
                                   "--no-progress", "--batch", str(BATCH), *extra).strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert result["rc"] == 0, summary
    return summary["totals"]["fps"], result["rss"] // 1024


def ceiling_fps(model: Path, hw: tuple[int, int], seconds: float = 8.0) -> float:
    backend = EmbeddedBackend(model)
    batch = np.full((BATCH, *hw, 3), 114, np.uint8)
    for lane in range(backend.lanes):
        backend.infer(lane, batch)  # warm-up
    done = [0] * backend.lanes
    deadline = time.perf_counter() + seconds

    def loop(lane: int) -> None:
        while time.perf_counter() < deadline:
            backend.infer(lane, batch)
            done[lane] += BATCH

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(backend.lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def decode_fps(clips: list[Path], sampling: Sampling) -> float:
    frames, start = 0, time.perf_counter()
    for clip in clips:
        with PyAVSource(clip, sampling=sampling) as src:
            frames += sum(1 for _ in src.frames(lambda hw: plan_letterbox(hw, (640, 640), minimal=True)))
    return frames / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, default=60)
    args = p.parse_args()
    model = ensure_model(640)
    src = WORK / f"clips720_{args.clips}x{args.frames}"
    clips = make_clips(src, count=args.clips, frames=args.frames)

    run_fps, _ = bulk_fps(src, model)
    ceiling = ceiling_fps(model, (384, 640))
    rows = [
        ["embedded run, every frame (batch 8, 720p -> 384x640)", run_fps, ""],
        ["bare onnxruntime, same sessions/batch/shape (ceiling)", ceiling, ""],
        ["ratio run / ceiling (goal >= 0.9)", run_fps / ceiling, ""],
    ]
    for sampling in (Sampling(), Sampling(every=5), Sampling(fps=2), Sampling(keyframes=True)):
        rows.append([f"decode + letterbox only, {sampling.describe()}", decode_fps(clips, sampling), "output frames/s"])

    # Peak RSS against the number of files: bounded queues should make it independent of
    # the count once the allocators have warmed up (a few files).
    for count in (1, 20, 40):
        folder = WORK / f"rss_{count}"
        make_clips(folder, count=count, frames=40)
        _, rss = bulk_fps(folder, model, "--every", "4")
        rows.append([f"peak RSS, {count} file(s) of 40 frames (MiB)", rss, "--every 4; goal: flat"])
    write_result("embedded", "Embedded bulk run (onnxruntime, CPU)", table(["measure", "value", "note"], rows))


if __name__ == "__main__":
    main()
