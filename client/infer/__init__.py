"""Inference backends: something that turns a uint8 batch into contract outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..contract import ModelInfo

__all__ = ["Backend", "BatchOutput"]


@dataclass(frozen=True)
class BatchOutput:
    detections: np.ndarray  # [B, max_det, 6] float32
    num_detections: np.ndarray  # [B, 1] int32

    def rows(self, i: int) -> np.ndarray:
        """The valid detection rows of image ``i``."""
        return self.detections[i, : int(self.num_detections[i, 0])]


class Backend(Protocol):
    """An inference backend; ``lanes`` calls of :meth:`infer` may run at once, one per lane."""

    model: ModelInfo
    lanes: int

    def batch_buffer(self, lane: int, shape: tuple[int, int, int, int]):
        """Where ``lane``'s next batch is written: a contiguous uint8 array of ``shape`` (host or
        device, whichever this backend reads) that :meth:`infer` takes without another copy."""
        ...

    def infer(self, lane: int, batch: np.ndarray) -> BatchOutput:
        """Blocking inference of ``batch`` [B, H, W, 3] uint8 on ``lane`` (0 <= lane < lanes).
        ``batch`` is best :meth:`batch_buffer`'s view; any other array is copied as needed."""
        ...

    def abort(self) -> None:
        """The run is stopping: calls of :meth:`infer` that are waiting (retrying an unreachable
        server) give up now by raising; a call that is computing may finish."""
        ...

    def close(self) -> None: ...

    def busy_seconds(self) -> float:
        """Seconds spent inside inference calls, summed over lanes (for the run report)."""
        ...
