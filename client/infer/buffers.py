"""Per-lane batch buffers: each lane fills one reusable buffer, so a batch costs no allocation.

A lane's buffer is reused only after its previous ``infer`` returned (a lane has one batch
out at a time), so no locking is needed.
"""

from __future__ import annotations

import math
from typing import Any, Callable


class LaneBuffers:
    """One flat uint8 buffer per lane, grown on demand; batches are contiguous views of it."""

    def __init__(self, lanes: int, allocate: Callable[[int], Any]) -> None:
        self._allocate = allocate
        self._flat: list[Any] = [None] * lanes

    def view(self, lane: int, shape: tuple[int, ...]) -> Any:
        n = math.prod(shape)
        flat = self._flat[lane]
        if flat is None or flat.size < n:
            flat = self._flat[lane] = self._allocate(n)
        return flat[:n].reshape(shape)


def host(n: int):
    import numpy as np

    return np.empty(n, np.uint8)


def device(n: int):
    import cupy as cp

    return cp.empty(n, cp.uint8)


def pinned(n: int):
    """Page-locked host memory: the one device-to-host copy of a GPU batch runs at full speed."""
    import cupyx

    return cupyx.empty_pinned((n,), dtype="uint8")
