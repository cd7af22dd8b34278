"""How closely a quantised model's boxes follow the float model's on the same frames.

The float model is the reference: a box of the quantised model agrees when it overlaps an
unmatched float box of the same class at IoU >= 0.5 (greedy, highest score first, as COCO
matches detections to ground truth). Precision says how many of its boxes the float model
also found, recall how many of the float model's boxes it kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Agreement", "IOU_MATCH", "agreement", "match_frame"]

IOU_MATCH = 0.5


@dataclass(frozen=True)
class Agreement:
    frames: int
    reference_boxes: int  # the float model's
    boxes: int  # the quantised model's
    matched: int
    iou_sum: float  # over matched pairs

    @property
    def precision(self) -> float:
        return self.matched / self.boxes if self.boxes else float(self.reference_boxes == 0)

    @property
    def recall(self) -> float:
        return self.matched / self.reference_boxes if self.reference_boxes else float(self.boxes == 0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_iou(self) -> float:
        return self.iou_sum / self.matched if self.matched else 0.0

    def describe(self) -> str:
        return (f"agreement with the float model on {self.frames} held-out frames: F1 {self.f1:.3f} "
                f"(precision {self.precision:.3f}, recall {self.recall:.3f}; {self.matched} of "
                f"{self.reference_boxes} float boxes matched at IoU >= {IOU_MATCH} by {self.boxes} "
                f"quantised boxes), mean IoU of matched boxes {self.mean_iou:.3f}")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: a (N, 4) against b (M, 4) -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_frame(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, float]:
    """Matches between two frames' detections (rows x1, y1, x2, y2, score, class): the number
    of candidate boxes matched to a reference box, and the sum of their IoUs."""
    if not len(reference) or not len(candidate):
        return 0, 0.0
    iou = _iou(candidate[:, :4].astype(np.float64), reference[:, :4].astype(np.float64))
    iou[candidate[:, 5][:, None] != reference[:, 5][None, :]] = 0.0
    taken = np.zeros(len(reference), dtype=bool)
    matched, iou_sum = 0, 0.0
    for i in np.argsort(-candidate[:, 4], kind="stable"):
        row = np.where(taken, 0.0, iou[i])
        j = int(np.argmax(row))
        if row[j] >= IOU_MATCH:
            taken[j] = True
            matched += 1
            iou_sum += float(row[j])
    return matched, iou_sum


def agreement(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Agreement:
    """Agreement over frames, given each frame's detections from both models."""
    if len(reference) != len(candidate):
        raise ValueError(f"both models need the same frames, got {len(reference)} and {len(candidate)}")
    matched, iou_sum = 0, 0.0
    for ref, cand in zip(reference, candidate):
        m, s = match_frame(ref, cand)
        matched += m
        iou_sum += s
    return Agreement(
        frames=len(reference),
        reference_boxes=sum(len(r) for r in reference),
        boxes=sum(len(c) for c in candidate),
        matched=matched,
        iou_sum=iou_sum,
    )
