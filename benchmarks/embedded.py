"""Embedded (onnxruntime) bulk run against its ceiling, decode rates, and memory against file count.

    python -m benchmarks.embedded [--clips 4] [--frames 60]

Prints one markdown table and writes it to benchmarks/results/embedded.md. The ceiling is
the same backend (same sessions, same batch, same input shape) fed pre-made batches from
as many threads as it has lanes: what inference alone can do on this machine.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, bulk_summary, clip_args, clips_720p, ensure_model, make_clips, table, write_result
from client.decode import Sampling
from client.decode.pyav_source import PyAVSource
from client.infer.embedded import EmbeddedBackend
from client.letterbox import plan_letterbox

BATCH = 8


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
    args = clip_args(__doc__.splitlines()[0], clips=4, frames=60)
    model = ensure_model(640)
    src, clips = clips_720p(args)

    run_fps = bulk_summary(src, model, "--batch", str(BATCH))["totals"]["fps"]
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
        rss = bulk_summary(folder, model, "--batch", str(BATCH), "--every", "4")["rss_mib"]
        rows.append([f"peak RSS, {count} file(s) of 40 frames (MiB)", rss, "--every 4; goal: flat"])
    write_result("embedded", "Embedded bulk run (onnxruntime, CPU)", table(["measure", "value", "note"], rows))


if __name__ == "__main__":
    main()
