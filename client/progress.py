"""Progress: a live bar when stderr is a terminal, a plain log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time

from .defaults import PROGRESS_LOG_EVERY_S, PROGRESS_REDRAW_S

log = logging.getLogger("client.bulk")


class Progress:
    def __init__(self, *, files: int, frames_estimate: int, live: bool | None = None,
                 log_every_s: float = PROGRESS_LOG_EVERY_S) -> None:
        self.files_total = files
        self.frames_estimate = frames_estimate
        self.live = sys.stderr.isatty() if live is None else live
        self.log_every_s = log_every_s
        self.files_done = 0
        self.frames = 0
        self._start = time.monotonic()
        self._last = 0.0

    def frame(self) -> None:
        self.frames += 1
        self._maybe_show()

    def file_done(self) -> None:
        self.files_done += 1
        self._maybe_show(force=True)

    def _maybe_show(self, force: bool = False) -> None:
        now = time.monotonic()
        interval = PROGRESS_REDRAW_S if self.live else self.log_every_s
        if not force and now - self._last < interval:
            return
        if not self.live and force and now - self._last < 1.0:
            return
        self._last = now
        elapsed = now - self._start
        fps = self.frames / elapsed if elapsed > 0 else 0.0
        eta = ""
        if self.frames_estimate and fps > 0:
            eta = f" ETA {max(self.frames_estimate - self.frames, 0) / fps:.0f} s"
        if self.live:
            done = min(self.frames / self.frames_estimate, 1.0) if self.frames_estimate else 0.0
            bar = "#" * int(done * 24)
            sys.stderr.write(
                f"\r[{bar:<24}] {self.files_done}/{self.files_total} files {self.frames} frames {fps:.1f} frames/s{eta}   "
            )
            sys.stderr.flush()
        else:
            log.info("%d/%d files, %d frames, %.1f frames/s%s", self.files_done, self.files_total, self.frames, fps, eta)

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\n")
