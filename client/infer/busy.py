"""How busy a backend was: one clock shared by its lanes, for the run report's busy fraction."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator


class BusyClock:
    """Sums the seconds spent inside inference calls over all lanes, and the images answered.

    Lanes call at once, so the sums are taken under a lock. A call that raises is not counted:
    busy time is time that produced results, and the images answered are what a server's own
    inference count must reach (:func:`client.metrics.scrape_after`).
    """

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._seconds = 0.0
        self._images = 0

    @contextmanager
    def measure(self, images: int) -> Iterator[None]:
        """Time one call that infers ``images`` images."""
        start = self._now()
        yield
        elapsed = self._now() - start
        with self._lock:
            self._seconds += elapsed
            self._images += images

    @property
    def seconds(self) -> float:
        return self._seconds

    @property
    def images(self) -> int:
        return self._images
