"""Embedded (onnxruntime) bulk run against its decode-aware ceiling, decode rates, and memory against file count.

    python -m benchmarks.embedded [--clips 4] [--frames 60] [--rounds 3]

Prints one markdown table and writes it to benchmarks/results/embedded.md.

The yardstick is what this machine can do at best: the bare model (the same backend, same
sessions, batch and input shape, fed pre-made batches from as many threads as it has lanes)
slowed by decoding, which shares the same CPUs. Decoding and letterboxing cost
``decode_cpu_s`` of CPU a frame (all threads, FFmpeg's too, with the run's thread budget),
so with ``cores`` usable CPUs the ceiling is ``1 / (1 / bare + decode_cpu_s / cores)``; the
run's ratio to it is the pipeline's efficiency (goal >= 0.97). The run, the bare model and
the decode cost are measured in alternating rounds, so a busy machine slows all three alike.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, bulk_summary, clips_720p, ensure_model, make_clips, table, write_result
from client.decode import Sampling
from client.decode.pyav_source import PyAVSource
from client.infer.embedded import EmbeddedBackend
from client.letterbox import plan_letterbox
from client.threads import apply_opencv, split_budget, usable_cpus

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


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_cost(clips: list[Path], sampling: Sampling, threads: int) -> tuple[float, float]:
    """Decode + letterbox alone, as a run's decoder does it: output frames/s and CPU seconds a frame."""
    frames, start, cpu = 0, time.perf_counter(), cpu_s()
    for clip in clips:
        with PyAVSource(clip, sampling=sampling, threads=threads) as src:
            frames += sum(1 for _ in src.frames(lambda hw: plan_letterbox(hw, (640, 640), minimal=True)))
    return frames / (time.perf_counter() - start), (cpu_s() - cpu) / frames


def ceiling(bare_fps: float, decode_cpu_s: float, cores: int) -> float:
    """The best rate when every frame needs the model and ``decode_cpu_s`` of the same CPUs."""
    return 1 / (1 / bare_fps + decode_cpu_s / cores)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=4, help="720p H.264 clips to generate")
    p.add_argument("--frames", type=int, default=60, help="frames per clip")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of run, bare model and decode")
    p.add_argument("--no-extras", action="store_true", help="skip the sampling modes and the memory rows")
    args = p.parse_args()
    model = ensure_model(640)
    src, clips = clips_720p(args)
    cpus = usable_cpus()
    budget = split_budget(cpus, workers=1, sessions=None, cpu_inference=True)  # what the run itself uses
    apply_opencv(budget)

    run, bare, decode, ceil, ratio = [], [], [], [], []
    for _ in range(args.rounds):
        run.append(bulk_summary(src, model, "--batch", str(BATCH))["totals"]["fps"])
        bare.append(ceiling_fps(model, (384, 640)))
        decode.append(decode_cost(clips, Sampling(), budget.decode_threads)[1])
        ceil.append(ceiling(bare[-1], decode[-1], cpus.cpus))
        ratio.append(run[-1] / ceil[-1])

    def row(name: str, values: list[float], note: str, fmt: str = "{:.2f}") -> list[object]:
        return [name, statistics.median(values), ", ".join(fmt.format(v) for v in values), note]

    rows = [
        row("embedded run, every frame (batch 8, 720p -> 384x640), frames/s", run, ""),
        row("bare onnxruntime, same sessions/batch/shape, frames/s", bare, "the model alone"),
        row("decode + letterbox, CPU ms a frame", [d * 1e3 for d in decode], f"{budget.decode_threads} FFmpeg "
            f"thread(s), OpenCV {budget.opencv_threads}"),
        row(f"ceiling = 1 / (1/bare + decode / {cpus.cpus} cores), frames/s", ceil, "decode-aware"),
        row("ratio run / ceiling", ratio, "goal >= 0.97", "{:.3f}"),
        row("ratio run / bare model", [r / b for r, b in zip(run, bare)], "decoding shares the CPUs", "{:.3f}"),
    ]
    body = table(["measure", "median", "each round", "note"], rows)
    body += f"\n\n{cpus.describe()}; {args.clips} clips x {args.frames} frames; rounds alternate run, bare, decode."
    body += f"\n\nLoad average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work slows every figure).\n"
    if not args.no_extras:
        extras = []
        for sampling in (Sampling(), Sampling(every=5), Sampling(fps=2), Sampling(keyframes=True)):
            fps, cpu = decode_cost(clips, sampling, budget.decode_threads)
            extras.append([f"decode + letterbox only, {sampling.describe()}", fps, f"output frames/s; {cpu * 1e3:.2f} "
                           "CPU ms an output frame"])
        # Peak RSS against the number of files: bounded queues should make it independent of
        # the count once the allocators have warmed up (a few files).
        for count in (1, 20, 40):
            folder = WORK / f"rss_{count}"
            make_clips(folder, count=count, frames=40)
            rss = bulk_summary(folder, model, "--batch", str(BATCH), "--every", "4")["rss_mib"]
            extras.append([f"peak RSS, {count} file(s) of 40 frames (MiB)", rss, "--every 4; goal: flat"])
        body += "\n\n" + table(["measure", "value", "note"], extras)
    write_result("embedded", "Embedded bulk run (onnxruntime, CPU) against its decode-aware ceiling", body)


if __name__ == "__main__":
    main()
