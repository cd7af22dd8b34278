"""``python -m tests.resume_runner COUNT [READY AT GO [SEG0_AT]] -- BULK ARGS``: the real bulk CLI in
its own process, its backend counting the frames it infers (written to COUNT when the run closes it).

With ``READY AT GO``: once AT frames have been inferred, the next batch waits before its
inference: READY is created and the lane holds until GO exists (the test sends its signal in
between); the backend creates ``READY.stopped`` when the run tells it to stop (the first signal
has been handled). The stop point is a count of frames, not a time, so it holds on any machine.
With ``SEG0_AT`` too, segment 0 of a split video holds before decoding that frame until GO exists,
so its later segments get ahead of it (a stop then leaves them complete past a gap).

The count and the hold are the only changes: decoding, inference, outputs and signal handling
are the real ones.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np

from client import backends, bulk

from .fault_runner import Delegating
from .signal_runner import _hold_segment_0, hold


class Counting(Delegating):
    """The real backend; counts the frames of every batch it infers, and may hold once at ``at``."""

    def __init__(self, inner, count: Path, ready: Path | None, at: int, go: Path | None) -> None:
        super().__init__(inner)
        self.count_file, self.ready, self.at, self.go = count, ready, at, go
        self.frames = 0
        self._lock = threading.Lock()
        self._held = False

    def infer(self, lane, batch):
        with self._lock:
            stop_here = self.ready is not None and not self._held and self.frames >= self.at
            self._held = self._held or stop_here
        if stop_here:
            hold(self.ready, self.go)
        out = self.inner.infer(lane, batch)
        with self._lock:
            self.frames += int(np.asarray(batch).shape[0])
        return out

    def abort(self) -> None:
        if self.ready is not None:
            Path(f"{self.ready}.stopped").touch()
        self.inner.abort()

    def close(self) -> None:
        self.count_file.write_text(str(self.frames))
        self.inner.close()


def main(argv: list[str]) -> int:
    split = argv.index("--")
    mine, rest = argv[:split], argv[split + 1:]
    count = Path(mine[0])
    ready, at, go = (Path(mine[1]), int(mine[2]), Path(mine[3])) if len(mine) >= 4 else (None, 0, None)
    if len(mine) == 5:
        _hold_segment_0(int(mine[4]), lambda: hold(None, go))
    make_backend = backends.make_backend
    backends.make_backend = lambda *a, **k: Counting(make_backend(*a, **k), count, ready, at, go)
    return bulk.main(rest, signals=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
