"""``python -m tests.signal_runner MODE READY ARG -- BULK ARGS``: the real bulk CLI in its own
process, held at one known point so a test can send a real signal exactly there.

- ``summary READY GO``: when the run is over and summary.json is about to be written, create
  READY and wait until GO exists (the test creates it once its signal has been delivered), then
  write the summary as usual.
- ``write READY REL:INDEX:GO``: when the collector writes frame INDEX of video REL (in the
  run's one writing thread), create READY and wait there until GO exists; the backend creates
  ``READY.stopped`` when the run tells it to stop (the first signal has been handled).
- ``gap READY FIRST:GO``: for a split video whose frames show their own index (grey level
  ``GREY0 + index``, :func:`index_frame`): the decoding of segment 0 stops before frame
  ``FIRST - MISSING`` until a frame at or after FIRST (a later segment) has been inferred, then
  creates READY (the file's results now have a gap of at least ``MISSING`` frames) and waits
  there until GO exists; the backend creates ``READY.stopped`` when the run tells it to stop.
  The gap stays open until the test lets segment 0 go, however slow the machine.

Every hold gives up after ``HOLD_S`` (the test that should have let it go has died): the process
then ends at once with exit code ``HOLD_EXPIRED``, so no run is left behind holding OUT's lock.

As in ``tests/fault_runner.py``, the hold is the only change: decoding, inference, outputs and
signal handling are the real ones.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from client import backends, bulk
from client.pipeline import Job, Pipeline

from .fault_runner import Delegating

GREY0 = 40  # frame i is grey GREY0 + i
MISSING = 12  # frames before FIRST not even decoded when READY is made (several batches' worth)
HOLD_S = 300.0  # a hold's go-ahead comes within seconds; past this the test is gone
HOLD_EXPIRED = 124


def hold(ready: Path | None, go: Path) -> None:
    """Create ``ready`` (the test's event) and wait until ``go`` exists; past ``HOLD_S`` end the
    process at once (os._exit: a hold may be in any thread, and nothing after it must run)."""
    if ready is not None:
        ready.touch()
    deadline = time.monotonic() + HOLD_S
    while not go.exists():
        if time.monotonic() > deadline:
            print(f"tests.signal_runner: no {go} within {HOLD_S:.0f} s; giving up", file=sys.stderr, flush=True)
            os._exit(HOLD_EXPIRED)
        time.sleep(0.01)


def index_frame(i: int, w: int, h: int) -> np.ndarray:
    """Frame ``i`` of a video whose frames say their own index (for ``write_video(image=...)``)."""
    return np.full((h, w, 3), GREY0 + i, np.uint8)


class _HeldWriter:
    """A video's writer whose write of one frame waits for the test's go-ahead first."""

    def __init__(self, writer, index: int, ready: Path, go: Path) -> None:
        self._writer, self._index, self._ready, self._go = writer, index, ready, go

    def write(self, index, t_s, detections) -> None:
        if index == self._index:
            hold(self._ready, self._go)
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
    """Reads each inferred frame's index from its pixels; sets ``later`` once one at or after
    ``first`` (a later segment) has been inferred."""

    def __init__(self, inner, first: int) -> None:
        super().__init__(inner)
        self.first, self.later = first, threading.Event()

    def infer(self, lane, batch):
        out = self.inner.infer(lane, batch)
        images = np.asarray(batch)
        h, w = images.shape[1:3]
        if any(int(round(float(im[h // 2, w // 2].mean()))) - GREY0 >= self.first for im in images):
            self.later.set()
        return out


class _HeldSource:
    """A segment's frame source whose decoding calls ``gate`` before handing on frame ``at``."""

    def __init__(self, source, at: int, gate: Callable[[], None]) -> None:
        self._source, self._at, self._gate = source, at, gate

    def __enter__(self) -> "_HeldSource":
        self._source.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._source.__exit__(*exc)

    def frames(self, plan_for):
        for frame in self._source.frames(plan_for):
            if frame.index == self._at:
                self._gate()
            yield frame

    def __getattr__(self, name: str):
        return getattr(self._source, name)


def _hold_segment_0(at: int, gate: Callable[[], None]) -> None:
    """Every pipeline's split jobs: segment 0 calls ``gate`` before decoding frame ``at``."""
    start = Pipeline.start

    def held(job: Job) -> Job:
        if job.segment != 0 or job.seq_of is None:
            return job
        open_source = job.open_source
        return replace(job, open_source=lambda: _HeldSource(open_source(), at, gate))

    def start_held(self, jobs, **kwargs):
        return start(self, [held(job) for job in jobs], **kwargs)

    Pipeline.start = start_held


def main(argv: list[str]) -> int:
    mode, ready, arg, rest = argv[0], Path(argv[1]), argv[2], argv[4:]
    arm(mode, ready, arg)
    return bulk.main(rest, signals=True)  # stands in for the program: takes the signals as it does


def arm(mode: str, ready: Path, arg: str) -> None:
    """Make the next bulk run in this process hold at ``mode``'s point (see the module docstring)."""
    if mode == "summary":
        go, write = Path(arg), bulk._write_summary

        def held(*args, **kwargs):
            hold(ready, go)
            return write(*args, **kwargs)

        bulk._write_summary = held
    elif mode == "write":
        import client.sinks

        rel, index, go = arg.split(":", 2)
        make_sink, make_backend = client.sinks.make_sink, backends.make_backend
        client.sinks.make_sink = lambda *a, **k: _HoldingSink(make_sink(*a, **k), rel, int(index), ready, Path(go))
        backends.make_backend = lambda *a, **k: TellsWhenStopped(make_backend(*a, **k), Path(f"{ready}.stopped"))
    elif mode == "gap":
        first, go = arg.split(":", 1)
        make_backend, watchers = backends.make_backend, []

        def watched(*a, **k) -> TellsWhenStopped:
            watchers.append(GapWatcher(make_backend(*a, **k), int(first)))
            return TellsWhenStopped(watchers[-1], Path(f"{ready}.stopped"))

        def gate() -> None:  # in segment 0's decoder: frames from here on are neither decoded nor inferred
            deadline = time.monotonic() + HOLD_S
            while not any(w.later.is_set() for w in watchers):
                if time.monotonic() > deadline:
                    print(f"tests.signal_runner: no frame of a later segment inferred within {HOLD_S:.0f} s",
                          file=sys.stderr, flush=True)
                    os._exit(HOLD_EXPIRED)
                time.sleep(0.01)
            hold(ready, Path(go))  # the gap is there: READY, and segment 0 waits for the test

        backends.make_backend = watched
        _hold_segment_0(int(first) - MISSING, gate)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
