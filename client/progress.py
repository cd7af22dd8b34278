"""Progress: a live bar when stderr is a terminal, a plain log line every few seconds otherwise.

Both say the same things: files ok, failed and still to do; frames done of the frames planned
(each file's estimate replaced by what it gave once it ends, so a damaged file's missing
frames stop counting as work ahead); the run's rate (every file's frames together, measured
over the last seconds of results, :mod:`client.rate`); and the ETA by
:class:`~client.rate.EtaSmoother`'s rule: hidden until the rate is first steady, then always
shown, from the smoothed rate. The bar is the terminal's status line
(:class:`~client.terminal.StatusLine`): log lines and warnings print above it, never on it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from .defaults import PROGRESS_LOG_EVERY_S, PROGRESS_REDRAW_S, RATE_BURST_S, RATE_WINDOW_S
from .rate import EtaSmoother, RateMeter
from .report import OK
from .terminal import TolerantStream, status_line

log = logging.getLogger("client.bulk")

__all__ = ["Progress", "duration_text"]

_BAR_WIDTH = 10


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: as precise as an estimate deserves."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    def __init__(self, *, files: int, frames_estimate: int, live: bool | None = None,
                 log_every_s: float = PROGRESS_LOG_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 meter: RateMeter | None = None, eta: EtaSmoother | None = None) -> None:
        self.files_total = files
        self.frames_estimate = frames_estimate
        self._stderr = TolerantStream(sys.stderr)  # closed, or a pipe nobody reads: the run goes on
        self.live = self._stderr.isatty() if live is None else live
        self.log_every_s = log_every_s
        self.files_ok = 0
        self.files_failed = 0
        self.frames = 0
        self._clock = clock
        self.meter = meter or RateMeter()
        self.eta = eta or EtaSmoother()
        self._status = status_line(self._stderr) if self.live else None
        self._closed = False
        self._eta_t = self._prev_t = float("-inf")
        self._last = clock() - max(log_every_s, PROGRESS_REDRAW_S)  # the first result is shown at once

    @property
    def files_done(self) -> int:
        return self.files_ok + self.files_failed

    @property
    def files_left(self) -> int:
        return max(self.files_total - self.files_done, 0)

    @property
    def frames_total(self) -> int:
        """Frames planned: the estimate, never below what is done."""
        return max(self.frames_estimate, self.frames)

    def frame(self) -> None:
        self.frames += 1
        now = self._clock()
        self._update_eta(now)
        self.meter.add(now, self.frames)
        self._prev_t = now
        self._maybe_show()

    def _update_eta(self, now: float) -> None:
        """Give the ETA the meter's reading as the last arrival left it: taken as a new arrival
        begins (a gap of RATE_BURST_S), its batch's frames are all counted; a reading after a
        batch's first frame would count one of them. At most every PROGRESS_REDRAW_S (a reading
        scans the window), and at least every second when results never pause."""
        since = now - self._eta_t
        if self._prev_t == float("-inf"):
            return  # no result yet
        if since >= PROGRESS_REDRAW_S and (now - self._prev_t >= RATE_BURST_S or since >= 1.0):
            self._eta_t = now
            self.eta.update(self._prev_t, self.meter.reading())

    def file_done(self, status: str = OK, *, frames: int | None = None, planned: int | None = None) -> None:
        """A file ended with ``status``; ``frames`` it gave of the ``planned`` (its estimate): the
        difference leaves the frames ahead (a damaged file's missing frames are no work left)."""
        if status == OK:
            self.files_ok += 1
        else:
            self.files_failed += 1
        if frames is not None and planned is not None:
            self.frames_estimate += frames - planned
        self._maybe_show(force=True)

    def line(self) -> str:
        """The plain line (logs, CI): every figure named."""
        total = self.frames_total
        share = f" ({100 * self.frames / total:.0f}%)" if total else ""
        fps = self.meter.reading().fps
        rate = f"{fps:.1f} frames/s over the last {RATE_WINDOW_S:g} s" if fps is not None else "rate: measuring"
        eta = self._eta() if self.eta.shown else "ETA once the rate is steady"
        return (f"files: {self.files_ok} ok, {self.files_failed} failed, {self.files_left} to do; "
                f"frames: {self.frames} of {total}{share}; {rate}; {eta}")

    def bar(self) -> str:
        """The live status line, most important first (a narrow terminal cuts its end): the bar
        of frames done, the files' counters, the ETA, the frames, the rate."""
        total = self.frames_total
        done = min(self.frames / total, 1.0) if total else 0.0
        fps = self.meter.reading().fps
        rate = f"{fps:.1f} frames/s" if fps is not None else "rate: measuring"
        return (f"[{'#' * int(done * _BAR_WIDTH):<{_BAR_WIDTH}}] {100 * done:3.0f}% "
                f"{self.files_ok} ok, {self.files_failed} failed, {self.files_left} to do | {self._eta()} | "
                f"{self.frames}/{total} frames | {rate}")

    def _eta(self) -> str:
        left = self.eta.eta_s(self.frames_total - self.frames)
        return f"ETA {duration_text(left)}" if left is not None else "ETA: measuring"

    def _maybe_show(self, force: bool = False) -> None:
        if self._closed:
            return
        now = self._clock()
        interval = PROGRESS_REDRAW_S if self.live else self.log_every_s
        if not force and now - self._last < interval:
            return
        if not self.live and force and now - self._last < 1.0:
            return
        self._last = now
        if self._status is not None:
            self._status.show(self.bar())
        else:
            log.info("progress: %s", self.line())

    def close(self) -> None:
        """The last state stays on screen (live) and the table follows on a line of its own."""
        if self._closed:
            return
        self._closed = True
        if self._status is not None:
            self._status.show(self.bar())
            self._status.end()
