"""One frame's detections, the type every stage after inference speaks.

Built once, where the backend's rows are mapped back to source pixels
(the pipeline's ``_frame_result``), and taken as is by the sinks. Its arrays are checked
at construction, so a sink never guesses at shapes or dtypes and the output formats (JSON
rounding, Parquet column types) follow from the types here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["Detections"]


@dataclass(frozen=True)
class Detections:
    """``N`` boxes of one frame, in the source frame's pixels as a viewer sees it.

    ``xyxy`` (N, 4) float32: x1, y1, x2, y2; ``confidence`` (N,) float32; ``class_id`` (N,)
    int32, an index into the model's class names; ``track_id`` (N,) int32 when a tracker ran
    (``--track``; -1 for a detection no track holds), else None.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check("xyxy", self.xyxy, np.float32, "(N, 4)", ndim=2)
        if self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        n = len(self.xyxy)
        _check("confidence", self.confidence, np.float32, f"({n},) to match xyxy", ndim=1, n=n)
        _check("class_id", self.class_id, np.int32, f"({n},) to match xyxy", ndim=1, n=n)
        if self.track_id is not None:
            _check("track_id", self.track_id, np.int32, f"({n},) to match xyxy", ndim=1, n=n)

    def __len__(self) -> int:
        return len(self.xyxy)

    def rows(self) -> Iterator[tuple[float, float, float, float, float, int]]:
        """Python values per detection, in the output's column order (x1, y1, x2, y2, score,
        class_id): the float32 values exactly, for the sinks to round or store."""
        return zip(*self.xyxy.T.tolist(), self.confidence.tolist(), self.class_id.tolist())

    def take(self, rows: np.ndarray) -> "Detections":
        """The detections at ``rows`` (indices or a boolean mask), every column alike."""
        tracks = self.track_id[rows] if self.track_id is not None else None
        return Detections(self.xyxy[rows], self.confidence[rows], self.class_id[rows], tracks)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


def _check(name: str, a: object, dtype: type, shape: str, *, ndim: int, n: int | None = None) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.ndim != ndim or (n is not None and a.shape[0] != n):
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {a.dtype.name}")
