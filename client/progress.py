"""Progress: a live bar when stderr is a terminal, a plain log line every few seconds otherwise.

The rate shown is the run's (every file's frames together, measured over the last seconds of
results, :mod:`client.rate`), and the ETA appears only once that rate is steady: the first
seconds of a run (warm-up, the first batch filling) would predict nonsense.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from .defaults import PROGRESS_LOG_EVERY_S, PROGRESS_REDRAW_S, RATE_WINDOW_S
from .rate import RateMeter
from .terminal import TolerantStream

log = logging.getLogger("client.bulk")


class Progress:
    def __init__(self, *, files: int, frames_estimate: int, live: bool | None = None,
                 log_every_s: float = PROGRESS_LOG_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 meter: RateMeter | None = None) -> None:
        self.files_total = files
        self.frames_estimate = frames_estimate
        self._stderr = TolerantStream(sys.stderr)  # closed, or a pipe nobody reads: the run goes on
        self.live = self._stderr.isatty() if live is None else live
        self.log_every_s = log_every_s
        self.files_done = 0
        self.frames = 0
        self._clock = clock
        self.meter = meter or RateMeter()
        self._last = clock() - max(log_every_s, PROGRESS_REDRAW_S)  # the first result is shown at once

    def frame(self) -> None:
        self.frames += 1
        self.meter.add(self._clock(), self.frames)
        self._maybe_show()

    def file_done(self) -> None:
        self.files_done += 1
        self._maybe_show(force=True)

    def line(self) -> str:
        """What the run is doing now, each figure saying what it is."""
        reading = self.meter.reading()
        rate = (f"{reading.fps:.1f} frames/s over the last {RATE_WINDOW_S:g} s" if reading.fps is not None
                else "rate: measuring")
        eta = ""
        if self.frames_estimate:
            left = reading.eta_s(self.frames_estimate - self.frames)
            eta = f", ETA {left:.0f} s" if left is not None else ", ETA once the rate is steady"
        return f"{self.files_done}/{self.files_total} files, {self.frames} frames, {rate}{eta}"

    def _maybe_show(self, force: bool = False) -> None:
        now = self._clock()
        interval = PROGRESS_REDRAW_S if self.live else self.log_every_s
        if not force and now - self._last < interval:
            return
        if not self.live and force and now - self._last < 1.0:
            return
        self._last = now
        if self.live:
            done = min(self.frames / self.frames_estimate, 1.0) if self.frames_estimate else 0.0
            bar = "#" * int(done * 24)
            self._stderr.write(f"\r[{bar:<24}] {self.line()}   ")
            self._stderr.flush()
        else:
            log.info("%s", self.line())

    def close(self) -> None:
        if self.live:
            self._stderr.write("\n")
