"""The speed an INT8 model keeps: its frames/s and the float model's, measured side by side.

Both sessions run the same frames in alternating rounds in one process, so a busy moment of
a shared machine slows both; the median round of each is reported. It is a figure for the
user, not a benchmark (``benchmarks/quantize.py`` is): a few frames, the sessions' default
threads.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from client.contract import DETECTIONS, INPUT, NUM_DETECTIONS

__all__ = ["Speed", "side_by_side"]


@dataclass(frozen=True)
class Speed:
    frames: int
    rounds: int
    int8_fps: float
    float_fps: float

    @property
    def ratio(self) -> float:
        return self.int8_fps / self.float_fps if self.float_fps else 0.0

    def describe(self) -> str:
        return (f"speed kept, measured side by side on {self.frames} check frames ({self.rounds} rounds each): "
                f"INT8 {self.int8_fps:.1f} frames/s, float {self.float_fps:.1f} frames/s ({self.ratio:.2f}x)")


def _fps(session, frames: Sequence[np.ndarray]) -> float:
    start = time.perf_counter()
    for frame in frames:
        session.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: frame[None]})
    return len(frames) / max(time.perf_counter() - start, 1e-9)


def side_by_side(int8_session, float_session, frames: Sequence[np.ndarray], *, rounds: int = 3) -> Speed:
    """Frames/s of both sessions on ``frames``, after one warm-up frame each."""
    for session in (int8_session, float_session):
        _fps(session, frames[:1])
    int8, flt = [], []
    for _ in range(rounds):
        int8.append(_fps(int8_session, frames))
        flt.append(_fps(float_session, frames))
    return Speed(len(frames), rounds, statistics.median(int8), statistics.median(flt))
