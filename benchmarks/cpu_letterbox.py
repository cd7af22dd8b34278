"""The CPU letterbox: exactness against the reference and decode+letterbox speed, three ways.

    python -m benchmarks.cpu_letterbox [--frames 90] [--repeats 3]

- exact: YUV to RGB with the shared coefficients (OpenCV), OpenCV INTER_LINEAR resize (default)
- swscale colour: FFmpeg's fixed-point YUV to RGB, then the same OpenCV resize (before this change)
- no OpenCV: swscale converts and resizes (what runs without ``framestream[exact]``)

Accuracy is per pixel against the NumPy reference (``client.colour`` + ``client.letterbox``)
on the first frame, which is also what the CUDA kernel is held to. Speed is PyAVSource's
decode+letterbox frames/s on every frame; the three are interleaved, ``--repeats`` rounds,
median reported. Writes results/cpu_letterbox.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, table, write_result
from client.decode import pyav_source
from client.letterbox import plan_letterbox

PLAN = lambda hw: plan_letterbox(hw, (640, 640), minimal=True)  # noqa: E731

VARIANTS = ("exact", "swscale colour", "no OpenCV")


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
    rgb, cv = pyav_source._rgb, pyav_source.opencv
    if name == "swscale colour":
        pyav_source._rgb = lambda frame, colour, cv2: frame.to_ndarray(format="rgb24")
    elif name == "no OpenCV":
        pyav_source.opencv = lambda: None

    def undo() -> None:
        pyav_source._rgb, pyav_source.opencv = rgb, cv

    return undo


def first_frame(path: Path) -> np.ndarray:
    with pyav_source.PyAVSource(path) as src:
        return next(src.frames(PLAN)).image


def fps(path: Path) -> float:
    start = time.perf_counter()
    with pyav_source.PyAVSource(path) as src:
        n = sum(1 for _ in src.frames(PLAN))
    return n / (time.perf_counter() - start)


def main() -> None:
    from tests.test_decode import reference_letterbox

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
        speeds: dict[str, list[float]] = {v: [] for v in VARIANTS}
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
        exact_fps = statistics.median(speeds["exact"])
        for name in VARIANTS:
            within1, within2, worst = accuracy[name]
            median = statistics.median(speeds[name])
            rows.append([f"{size_wh[0]}x{size_wh[1]} {label}", name, f"{within1:.4f}", f"{within2:.4f}", worst,
                         median, median / exact_fps])
    body = table(["clip", "CPU letterbox", "within 1 level", "within 2 levels", "max diff", "frames/s",
                  "speed vs exact"], rows)
    write_result("cpu_letterbox", "CPU letterbox: exactness and speed", body)


if __name__ == "__main__":
    main()
