"""Plain NumPy post-processing with ultralytics ``predict`` semantics: the spec the graph matches."""

from __future__ import annotations

import numpy as np

from client.contract import NMS, NmsSettings

from .contract_graph import HeadLayout


def reference_detections(
    raw: np.ndarray, layout: HeadLayout, image_hw: tuple[int, int], nms: NmsSettings = NMS
) -> np.ndarray:
    """Detections ``[k, 6]`` (x1, y1, x2, y2, score, class) for one image's raw head output."""
    if layout is HeadLayout.ULTRALYTICS:
        rows = raw.T.astype(np.float64)
        xywh, cls = rows[:, :4], rows[:, 4:]
    elif layout is HeadLayout.YOLOV5:
        rows = raw.astype(np.float64)
        xywh, cls = rows[:, :4], rows[:, 5:] * rows[:, 4:5]
    else:
        raise ValueError(f"no NMS reference for layout {layout}")
    conf = cls.max(axis=1)
    class_id = cls.argmax(axis=1)
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    candidates = np.flatnonzero(conf > nms.conf_thres)
    order = candidates[np.argsort(-conf[candidates], kind="stable")]
    shifted = xyxy + class_id[:, None] * nms.max_wh
    kept: list[int] = []
    for i in order:
        if len(kept) == nms.max_det:
            break
        # torchvision suppresses where IoU > threshold; a 0/0 IoU of empty boxes is NaN: kept.
        if not kept or not (_iou(shifted[i], shifted[kept]) > nms.iou_thres).any():
            kept.append(int(i))
    h, w = image_hw
    boxes = np.clip(xyxy[kept], 0, [w, h, w, h])
    return np.column_stack([boxes, conf[kept], class_id[kept]]).astype(np.float32).reshape(-1, 6)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    tl = np.maximum(box[:2], others[:, :2])
    br = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area(box) + area(others) - inter)
