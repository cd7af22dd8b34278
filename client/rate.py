"""The run's throughput as it is measured, and an ETA only once that throughput is steady.

A run's first seconds say nothing about its rate: the first results wait for the sessions'
warm-up and for the first batch to fill, so frames over elapsed time then predicts an ETA
hundreds of times too long. The meter counts only from the first result, over a sliding
window of recent results, and calls the rate steady when the window's two halves agree.

What a person is shown is :class:`EtaSmoother`'s ETA. Its rule: hidden until the meter's first
steady reading; from then on always shown (a rate that wavers later moves the ETA, it never
hides it again, so the ETA does not blink on and off between redraws); computed from the
window's rate smoothed exponentially with the time constant ``ETA_SMOOTHING_S`` (a change of
pace moves it over seconds, a batch's burst barely does). Time is passed in, so tests feed it
instead of waiting on a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from . import defaults

__all__ = ["RateMeter", "Reading", "EtaSmoother"]


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


class EtaSmoother:
    """The ETA shown to a person, by the rule in this module's docstring: ``update`` with each
    reading, ``eta_s`` for the seconds left (None until the first steady reading)."""

    def __init__(self, *, smoothing_s: float = defaults.ETA_SMOOTHING_S) -> None:
        if smoothing_s <= 0:
            raise ValueError(f"smoothing_s must be positive, got {smoothing_s}")
        self.smoothing_s = smoothing_s
        self.fps: float | None = None  # the smoothed rate; None: not shown yet
        self._held: float | None = None  # the last reading's rate, holding until the next reading
        self._t: float | None = None

    @property
    def shown(self) -> bool:
        return self.fps is not None

    def update(self, t_s: float, reading: Reading) -> None:
        """Take the meter's ``reading`` at time ``t_s`` (monotonic seconds). A reading holds from
        its time until the next one: a batch's frames arrive at one time, and only the last
        reading of that time (the whole batch counted) is what held until the next."""
        if self.fps is not None and self._held is not None and self._t is not None and t_s > self._t:
            weight = 1.0 - math.exp(-(t_s - self._t) / self.smoothing_s)
            self.fps += weight * (self._held - self.fps)
        self._t = t_s
        if reading.fps is None or reading.fps <= 0:
            return  # nothing new to hold: the last reading goes on holding
        self._held = reading.fps
        if self.fps is None and reading.steady:  # the first steady reading: shown from now on
            self.fps = reading.fps

    def eta_s(self, remaining: int) -> float | None:
        """Seconds for ``remaining`` frames at the smoothed rate; None while not shown."""
        return max(remaining, 0) / self.fps if self.fps else None
