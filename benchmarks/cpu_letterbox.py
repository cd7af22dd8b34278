"""The CPU letterbox: exactness against the reference and decode+letterbox speed, three ways.

    python -m benchmarks.cpu_letterbox [--frames 90] [--repeats 3]

- exact: YUV to RGB with the shared coefficients (OpenCV), OpenCV INTER_LINEAR resize (default);
  only the pixels the resize reads are converted where it reads only some (1080p, 1440p, 4K)
- exact, every pixel: the same, converting every pixel (before the source taps)
- swscale colour: FFmpeg's fixed-point YUV to RGB, then the same OpenCV resize (before this change)
- no OpenCV: swscale converts and resizes (what runs without ``framestream[exact]``)

Accuracy is per pixel against the NumPy reference (``client.colour`` + ``client.letterbox``)
on the first frame, which is also what the CUDA kernel is held to. Speed is PyAVSource's
decode+letterbox frames/s on every frame, and its CPU time a frame (all threads; steadier than
wall time on a shared machine); the variants are interleaved, ``--repeats`` rounds, median reported. Writes results/cpu_letterbox.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, table, write_result
from client.decode import pyav_source
from client.letterbox import plan_letterbox
from client.threads import apply_opencv, split_budget, usable_cpus

PLAN = lambda hw: plan_letterbox(hw, (640, 640), minimal=True)  # noqa: E731

# Threads as an embedded run on this machine sets them (client.threads): OpenCV 1, FFmpeg a share.
BUDGET = split_budget(usable_cpus(), workers=1, sessions=None, cpu_inference=True)
VARIANTS = ("exact", "exact, every pixel", "swscale colour", "no OpenCV")


def clip(size_wh: tuple[int, int], colour: tuple[int, int] | None, frames: int) -> Path:
    from tests.videos import write_video

    name = "untagged" if colour is None else f"cs{colour[0]}_cr{colour[1]}"
    path = WORK / "cpu_letterbox" / f"{size_wh[0]}x{size_wh[1]}_{name}_{frames}f.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames=frames, size_wh=size_wh, fps=30, gop=30, bframes=2, colour=colour)
    return path


def variant(name: str):
    """Patch pyav_source for one variant; returns a function that undoes it."""
    rgb, cv, taps = pyav_source._rgb, pyav_source.opencv, pyav_source.source_taps
    if name in ("exact, every pixel", "swscale colour"):
        pyav_source.source_taps = lambda src_hw, resized_hw: None
    if name == "swscale colour":
        pyav_source._rgb = lambda frame, colour, cv2: frame.to_ndarray(format="rgb24")
    elif name == "no OpenCV":
        pyav_source.opencv = lambda: None

    def undo() -> None:
        pyav_source._rgb, pyav_source.opencv, pyav_source.source_taps = rgb, cv, taps

    return undo


def first_frame(path: Path) -> np.ndarray:
    with pyav_source.PyAVSource(path) as src:
        return next(src.frames(PLAN)).image


def cpu_s() -> float:
    """CPU seconds of this process, every thread (FFmpeg's too): steadier than wall time on a
    shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fps(path: Path) -> tuple[float, float]:
    """Decode + letterbox of every frame: frames/s and CPU milliseconds a frame."""
    start, cpu = time.perf_counter(), cpu_s()
    with pyav_source.PyAVSource(path, threads=BUDGET.decode_threads) as src:
        n = sum(1 for _ in src.frames(PLAN))
    return n / (time.perf_counter() - start), (cpu_s() - cpu) / n * 1e3


def main() -> None:
    from tests.test_decode import reference_letterbox

    apply_opencv(BUDGET)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cases = [((1280, 720), None, "BT.601 limited (untagged)"), ((1280, 720), (1, 1), "BT.709 limited"),
             ((1920, 1080), None, "BT.601 limited (untagged)"), ((1920, 1080), (1, 1), "BT.709 limited"),
             ((1920, 1080), (5, 2), "BT.601 full")]
    rows = []
    for size_wh, colour, label in cases:
        path = clip(size_wh, colour, args.frames)
        expected = reference_letterbox(path, PLAN(size_wh[::-1])).astype(int)
        speeds: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        accuracy = {}
        for name in VARIANTS:
            undo = variant(name)
            try:
                diff = np.abs(first_frame(path).astype(int) - expected)
            finally:
                undo()
            accuracy[name] = ((diff <= 1).mean(), (diff <= 2).mean(), int(diff.max()))
        for _ in range(args.repeats):
            for name in VARIANTS:
                undo = variant(name)
                try:
                    speeds[name].append(fps(path))
                finally:
                    undo()
        exact_cpu = statistics.median(cpu for _, cpu in speeds["exact"])
        for name in VARIANTS:
            within1, within2, worst = accuracy[name]
            cpu_ms = statistics.median(cpu for _, cpu in speeds[name])
            rows.append([f"{size_wh[0]}x{size_wh[1]} {label}", name, f"{within1:.4f}", f"{within2:.4f}", worst,
                         statistics.median(f for f, _ in speeds[name]), cpu_ms, cpu_ms / exact_cpu])
    body = table(["clip", "CPU letterbox", "within 1 level", "within 2 levels", "max diff", "frames/s",
                  "CPU ms a frame (decode + letterbox)", "CPU cost vs exact"], rows)
    body += f"\n\nLoad average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work slows every figure).\n"
    write_result("cpu_letterbox", "CPU letterbox: exactness and speed", body)


if __name__ == "__main__":
    main()
