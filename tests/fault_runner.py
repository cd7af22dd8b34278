"""``python -m tests.fault_runner OUT_READY DELAY_S -- BULK ARGS``: the real bulk CLI in its own
process, with its backend slowed once the first video is complete, so a test can send a
signal while files are in flight however fast the machine is.

The slow-down is the only change: decoding, inference, outputs and signal handling are
the real ones. It wraps the backend at the one seam for that, ``client.backends.make_backend``
(the other runners and tests that inject a backend fault do the same). ``OUT_READY`` is created when the slow-down starts (the test's event), and
``OUT_READY.PID`` when it starts in this process (for tests that run several, one per device).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from client import backends, bulk


class Delegating:
    """A backend that passes every call to the real one; subclasses change one call."""

    def __init__(self, inner) -> None:
        self.inner, self.model, self.lanes = inner, inner.model, inner.lanes

    def batch_buffer(self, lane, shape):
        return self.inner.batch_buffer(lane, shape)

    def infer(self, lane, batch):
        return self.inner.infer(lane, batch)

    def abort(self) -> None:
        self.inner.abort()

    def busy_seconds(self) -> float:
        return self.inner.busy_seconds()

    def close(self) -> None:
        self.inner.close()


class SlowAfterFirstComplete(Delegating):
    """Once a video is recorded complete, each batch waits ``delay_s`` before inference."""

    def __init__(self, inner, out: Path, ready: Path, delay_s: float) -> None:
        super().__init__(inner)
        self.out, self.ready, self.delay_s = out, ready, delay_s

    def _slow(self) -> bool:
        if self.ready.exists() or any((self.out / ".framestream").rglob("*.json")):  # a record: a video is complete
            self.ready.touch()
            self.ready.with_name(f"{self.ready.name}.{os.getpid()}").touch()
            return True
        return False

    def infer(self, lane, batch):
        if self._slow():
            time.sleep(self.delay_s)
        return self.inner.infer(lane, batch)


def main(argv: list[str]) -> int:
    ready, delay_s, rest = Path(argv[0]), float(argv[1]), argv[3:]
    out = Path(rest[rest.index("--out") + 1])
    make_backend = backends.make_backend
    backends.make_backend = lambda *a, **k: SlowAfterFirstComplete(make_backend(*a, **k), out, ready, delay_s)
    return bulk.main(rest, signals=True)  # stands in for the program: takes the signals as it does


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
