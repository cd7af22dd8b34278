"""Progress of ``quantize``'s long steps on stderr: frames calibrated, frames checked, an ETA.

A quantisation of a trained model takes minutes (calibration, then the agreement on hundreds
of held-out frames, then perhaps a search for the layers to keep float); a user must see it
move. On a terminal each step is one line rewritten in place; otherwise (a CI log, a file)
each step prints a plain line when it starts and at each quarter of its work, so a log reads
as a short list, never as one line per frame.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from client.terminal import TolerantStream

__all__ = ["Step"]

log = logging.getLogger("server_config.model")

_QUARTERS = (0.25, 0.5, 0.75, 1.0)


class Step:
    """One counted step (``label``: what is counted, e.g. "calibrating"; ``unit``: "frames")."""

    def __init__(self, label: str, total: int, *, unit: str = "frames", live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit, self.done = label, max(total, 0), unit, 0
        self._stderr = TolerantStream(sys.stderr)
        self._live = self._stderr.isatty() if live is None else live
        self._clock = clock
        self._start = clock()
        self._shown_quarter = 0
        self._show()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._live:
            self._show()
            return
        reached = sum(1 for q in _QUARTERS if self.total and self.done >= q * self.total)
        if reached > self._shown_quarter:
            self._shown_quarter = reached
            self._show()

    def line(self) -> str:
        elapsed = self._clock() - self._start
        text = f"quantize: {self.label}: {self.done}/{self.total} {self.unit}"
        if self.done >= self.total:
            return f"{text}, {elapsed:.0f} s"
        if self.done:
            return f"{text}, ETA {elapsed / self.done * (self.total - self.done):.0f} s"
        return text

    def _show(self) -> None:
        if self._live:
            end = "\n" if self.done >= self.total else ""
            self._stderr.write(f"\r{self.line()}\x1b[K{end}")
            self._stderr.flush()
        else:
            log.info("%s", self.line())
