"""The run's throughput as it is measured, and an ETA only once that throughput is steady.

A run's first seconds say nothing about its rate: the first results wait for the sessions'
warm-up and for the first batch to fill, so frames over elapsed time then predicts an ETA
hundreds of times too long. The meter counts only from the first result, over a sliding
window of recent results, and calls the rate steady when the window's two halves agree.
Time is passed in, so tests feed it instead of waiting on a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from . import defaults

__all__ = ["RateMeter", "Reading"]


@dataclass(frozen=True)
class Reading:
    """What the meter can say now: frames/s over its window (None before ``min_span_s`` of
    results), and whether that rate is steady enough to predict from."""

    fps: float | None
    steady: bool

    def eta_s(self, remaining: int) -> float | None:
        return max(remaining, 0) / self.fps if self.steady and self.fps else None


class RateMeter:
    def __init__(self, *, window_s: float = defaults.RATE_WINDOW_S, min_span_s: float = defaults.RATE_MIN_SPAN_S,
                 tolerance: float = defaults.RATE_TOLERANCE, min_events: int = defaults.RATE_MIN_EVENTS) -> None:
        self.window_s, self.min_span_s, self.tolerance, self.min_events = window_s, min_span_s, tolerance, min_events
        self._samples: deque[tuple[float, int]] = deque()  # (time, frames so far), one per arrival
        self._burst_start = float("-inf")

    def add(self, t_s: float, frames: int) -> None:
        """``frames`` results so far, counted at time ``t_s`` (monotonic seconds). Results closer
        than ``RATE_BURST_S`` to the first of their burst are one arrival (a batch's frames)."""
        if self._samples and t_s - self._burst_start < defaults.RATE_BURST_S:
            self._samples[-1] = (t_s, frames)
        else:
            self._burst_start = t_s
            self._samples.append((t_s, frames))
        # Keep the window, but never fewer than the events a steady verdict needs (slow runs).
        while len(self._samples) > 2 * self.min_events and self._samples[1][0] < t_s - self.window_s:
            self._samples.popleft()

    def reading(self) -> Reading:
        s = self._samples
        if len(s) < 2:
            return Reading(None, False)
        (t0, f0), (t1, f1) = s[0], s[-1]
        span = t1 - t0
        if span < self.min_span_s:
            return Reading(None, False)
        fps = (f1 - f0) / span  # from the first arrival: what came before it is not throughput
        if len(s) < self.min_events:
            return Reading(fps, False)
        mid = next(x for x in reversed(s) if x[0] <= t0 + span / 2)  # the arrival that splits the window
        if mid[0] <= t0 or mid[0] >= t1:
            return Reading(fps, False)
        r1 = (mid[1] - f0) / (mid[0] - t0)
        r2 = (f1 - mid[1]) / (t1 - mid[0])
        return Reading(fps, abs(r1 - r2) <= self.tolerance * max(r1, r2))
