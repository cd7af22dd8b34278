"""Frames written over the run's time, for the report's throughput plot.

Prometheus' gauges (``--metrics-port``) are sampled live and kept by the scraper, not by the
run; this keeps the run's own series, always, in bounded memory: frames are counted into
buckets of ``bucket_s`` seconds, and when a run outgrows ``max_points`` buckets, adjacent
buckets merge and the width doubles. An hour or a day is the same few hundred numbers.
"""

from __future__ import annotations

import time

__all__ = ["Throughput"]

_FIRST_BUCKET_S = 0.25
_MAX_POINTS = 512


class Throughput:
    """Counts frames by the time since ``start`` (monotonic seconds; default now)."""

    def __init__(self, start: float | None = None, *, bucket_s: float = _FIRST_BUCKET_S,
                 max_points: int = _MAX_POINTS) -> None:
        if bucket_s <= 0 or max_points < 2:
            raise ValueError(f"bucket_s must be positive and max_points at least 2, got {bucket_s}, {max_points}")
        self.start = time.monotonic() if start is None else start
        self.bucket_s = bucket_s
        self.max_points = max_points
        self.counts: list[int] = []

    def frame(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        i = max(0, int((now - self.start) / self.bucket_s))
        while i >= self.max_points:
            self._coarsen()
            i //= 2
        if i >= len(self.counts):
            self.counts.extend([0] * (i + 1 - len(self.counts)))
        self.counts[i] += 1

    def _coarsen(self) -> None:
        c = self.counts
        self.counts = [sum(c[j:j + 2]) for j in range(0, len(c), 2)]
        self.bucket_s *= 2

    def to_json(self, end: float | None = None) -> dict[str, object]:
        """``frames_per_s[i]`` is the rate in ``[i * bucket_s, (i + 1) * bucket_s)`` seconds after
        the start; buckets up to ``end`` (the run's end) are included even when empty."""
        counts = list(self.counts)
        if end is not None:
            last = min(int((end - self.start) / self.bucket_s), self.max_points - 1)
            counts.extend([0] * (last + 1 - len(counts)))
        return {"bucket_s": self.bucket_s, "frames_per_s": [round(n / self.bucket_s, 2) for n in counts]}
