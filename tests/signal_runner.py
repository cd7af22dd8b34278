"""``python -m tests.signal_runner MODE READY ARG -- BULK ARGS``: the real bulk CLI in its own
process, held at one known point so a test can send a real signal exactly there.

- ``summary READY GO``: when the run is over and summary.json is about to be written, create
  READY and wait until GO exists (the test creates it once its signal has been delivered), then
  write the summary as usual.
- ``write READY REL:INDEX:GO``: when the collector writes frame INDEX of video REL (in the
  run's one writing thread), create READY and wait there until GO exists; the backend creates
  ``READY.stopped`` when the run tells it to stop (the first signal has been handled).
- ``gap READY FIRST``: for a split video whose frames show their own index (grey level
  ``GREY0 + index``, :func:`index_frame`): once a frame at or after FIRST (a later segment) has
  been inferred while at least ``MISSING`` frames before it have not, create READY, and from then
  on slow each batch, so the signal arrives while the file's results have a gap.

As in ``tests/fault_runner.py``, the hold is the only change: decoding, inference, outputs and
signal handling are the real ones.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np

from client import bulk

from .fault_runner import Delegating

GREY0 = 40  # frame i is grey GREY0 + i
MISSING = 12  # frames before FIRST not inferred yet when READY is made (several batches' worth)


def index_frame(i: int, w: int, h: int) -> np.ndarray:
    """Frame ``i`` of a video whose frames say their own index (for ``write_video(image=...)``)."""
    return np.full((h, w, 3), GREY0 + i, np.uint8)


class _HeldWriter:
    """A video's writer whose write of one frame waits for the test's go-ahead first."""

    def __init__(self, writer, index: int, ready: Path, go: Path) -> None:
        self._writer, self._index, self._ready, self._go = writer, index, ready, go

    def write(self, index, t_s, detections) -> None:
        if index == self._index:
            self._ready.touch()
            while not self._go.exists():
                time.sleep(0.01)
        self._writer.write(index, t_s, detections)

    def __getattr__(self, name: str):
        return getattr(self._writer, name)


class _HoldingSink:
    """The real sink; the writer of ``rel`` holds at frame ``index``."""

    def __init__(self, sink, rel: str, index: int, ready: Path, go: Path) -> None:
        self._sink, self._rel, self._hold = sink, rel, (index, ready, go)

    def open(self, rel: str):
        writer = self._sink.open(rel)
        return _HeldWriter(writer, *self._hold) if rel == self._rel else writer

    def __getattr__(self, name: str):
        return getattr(self._sink, name)


class TellsWhenStopped(Delegating):
    """The real backend; ``abort`` (the run stopping) leaves a file behind."""

    def __init__(self, inner, stopped: Path) -> None:
        super().__init__(inner)
        self.stopped = stopped

    def abort(self) -> None:
        self.stopped.touch()
        self.inner.abort()


class GapWatcher(Delegating):
    """Reads each inferred frame's index from its pixels; READY once results have a gap."""

    def __init__(self, inner, ready: Path, first: int) -> None:
        super().__init__(inner)
        self.ready, self.first = ready, first
        self.inferred: set[int] = set()
        self.lock = threading.Lock()

    def infer(self, lane, batch):
        if self.ready.exists():
            time.sleep(0.2)
        out = self.inner.infer(lane, batch)
        images = np.asarray(batch)
        h, w = images.shape[1:3]
        with self.lock:
            self.inferred.update(int(round(float(im[h // 2, w // 2].mean()))) - GREY0 for im in images)
            later = any(i >= self.first for i in self.inferred)
            missing = sum(1 for i in range(self.first) if i not in self.inferred)
            if later and missing >= MISSING:
                self.ready.touch()
        return out


def main(argv: list[str]) -> int:
    mode, ready, arg, rest = argv[0], Path(argv[1]), argv[2], argv[4:]
    if mode == "summary":
        go, write = Path(arg), bulk._write_summary

        def held(*args, **kwargs):
            ready.touch()
            while not go.exists():
                time.sleep(0.01)
            return write(*args, **kwargs)

        bulk._write_summary = held
    elif mode == "write":
        import client.sinks

        rel, index, go = arg.split(":", 2)
        make_sink, make_backend = client.sinks.make_sink, bulk.make_backend
        client.sinks.make_sink = lambda *a, **k: _HoldingSink(make_sink(*a, **k), rel, int(index), ready, Path(go))
        bulk.make_backend = lambda *a, **k: TellsWhenStopped(make_backend(*a, **k), Path(f"{ready}.stopped"))
    elif mode == "gap":
        make_backend = bulk.make_backend
        bulk.make_backend = lambda *a, **k: GapWatcher(make_backend(*a, **k), ready, int(arg))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return bulk.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
