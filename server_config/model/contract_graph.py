"""The contract's two ends as ONNX: uint8 NHWC frames in, fixed-size NMS detections out.

Any YOLO head (built here or a user's export) is wrapped by these two functions, so
normalisation and NMS are defined once and every model speaks the same contract.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from onnx import helper

from client.contract import DETECTIONS, INPUT, NMS, NUM_DETECTIONS, NmsSettings

from .graph import GraphBuilder


class HeadLayout(str, Enum):
    """The raw outputs framestream knows how to wrap."""

    ULTRALYTICS = "ultralytics"  # [B, 4 + nc, N]: cx, cy, w, h, class probs (YOLOv8/YOLO11)
    YOLOV5 = "yolov5"  # [B, N, 5 + nc]: cx, cy, w, h, objectness, class probs
    END_TO_END = "nms"  # [B, max_det, 6]: x1, y1, x2, y2, score, class (export with nms=True)


def add_preprocess(g: GraphBuilder, elem_type: int) -> str:
    """``images`` uint8 [B,H,W,3] RGB -> [B,3,H,W] in 0..1 of the model's float type."""
    x = g.op("Cast", [INPUT.name], to=elem_type)
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    return g.op("Div", [x, g.const(255.0, dtype=_np_float(elem_type))])


def add_postprocess(g: GraphBuilder, raw: str, layout: HeadLayout, nms: NmsSettings = NMS) -> None:
    """Append NMS (or, for an end-to-end export, just the count) producing the contract outputs."""
    if layout is HeadLayout.END_TO_END:
        _end_to_end_outputs(g, raw, nms)
        return
    raw = g.op("Cast", [raw], to=1)  # fp16 exports post-process in fp32
    if layout is HeadLayout.ULTRALYTICS:
        rows = g.op("Transpose", [raw], perm=[0, 2, 1])  # [B, N, 4 + nc]
        xywh = _slice_last(g, rows, 0, 4)
        cls = _slice_last(g, rows, 4, None)
    else:
        rows = raw
        xywh = _slice_last(g, rows, 0, 4)
        cls = g.op("Mul", [_slice_last(g, rows, 5, None), _slice_last(g, rows, 4, 5)])
    xy, wh = g.op("Split", [xywh, g.i64([2, 2])], n_out=2, axis=2)
    half = g.op("Div", [wh, g.const(2.0)])
    xyxy = g.op("Concat", [g.op("Sub", [xy, half]), g.op("Add", [xy, half])], axis=2)  # [B, N, 4]
    conf = g.reduce_max(cls, 2)  # [B, N]
    class_id = g.op("Cast", [g.op("ArgMax", [cls], axis=2, keepdims=0)], to=1)  # [B, N]
    # Class-aware NMS as one NMS: boxes of different classes are moved max_wh apart.
    offset = g.op("Mul", [g.op("Unsqueeze", [class_id, g.i64([2])]), g.const(nms.max_wh)])
    selected = g.op(
        "NonMaxSuppression",
        [
            g.op("Add", [xyxy, offset]),
            g.op("Unsqueeze", [conf, g.i64([1])]),
            g.i64([nms.max_det]),
            g.const([nms.iou_thres]),
            g.const([nms.conf_thres]),
        ],
    )  # [K, 3]: batch, class (always 0), box; batch-major, each batch by descending score
    batch_idx = g.op("Squeeze", [_slice_last(g, selected, 0, 1), g.i64([1])])
    pick = g.op("Concat", [_slice_last(g, selected, 0, 1), _slice_last(g, selected, 2, 3)], axis=1)
    boxes = _clip_to_input(g, g.op("GatherND", [xyxy, pick]))
    score = g.op("Unsqueeze", [g.op("GatherND", [conf, pick]), g.i64([1])])
    cls_col = g.op("Unsqueeze", [g.op("GatherND", [class_id, pick]), g.i64([1])])
    rows_out = g.op("Concat", [boxes, score, cls_col], axis=1)  # [K, 6]
    _scatter_outputs(g, rows_out, batch_idx, nms.max_det)


def _scatter_outputs(g: GraphBuilder, rows: str, batch_idx: str, max_det: int) -> None:
    """Place each image's kept rows at [b, 0..count) of a zero [B, max_det, 6] tensor."""
    batch = g.op("Gather", [g.op("Shape", [INPUT.name]), g.i64([0])])  # [1]
    arange_b = g.op("Range", [g.i64(0), g.op("Squeeze", [batch, g.i64([0])]), g.i64(1)])
    member = g.op("Equal", [g.op("Unsqueeze", [arange_b, g.i64([1])]), g.op("Unsqueeze", [batch_idx, g.i64([0])])])
    counts = g.op("ReduceSum", [g.op("Cast", [member], to=7), g.i64([1])], keepdims=0)  # [B]
    starts = g.op("CumSum", [counts, g.i64(0)], exclusive=1)
    k = g.op("Squeeze", [g.op("Shape", [batch_idx]), g.i64([0])])
    pos = g.op("Sub", [g.op("Range", [g.i64(0), k, g.i64(1)]), g.op("Gather", [starts, batch_idx])])
    where = g.op("Concat", [g.op("Unsqueeze", [batch_idx, g.i64([1])]), g.op("Unsqueeze", [pos, g.i64([1])])], axis=1)
    shape = g.op("Concat", [batch, g.i64(list(DETECTIONS.dims))], axis=0)
    zeros = g.op("ConstantOfShape", [shape], value=helper.make_tensor("v", 1, [1], [0.0]))
    g.nodes.append(helper.make_node("ScatterND", [zeros, where, rows], [DETECTIONS.name], name="detections_out"))
    count = g.op("Cast", [g.op("Unsqueeze", [counts, g.i64([1])])], to=NUM_DETECTIONS.onnx_dtype)
    g.nodes.append(helper.make_node("Identity", [count], [NUM_DETECTIONS.name], name="num_detections_out"))


def _end_to_end_outputs(g: GraphBuilder, raw: str, nms: NmsSettings) -> None:
    """An nms=True export already holds detections (best first): keep its first max_det rows, pad
    to the contract's rows, zero the rows at or under the confidence threshold, count."""
    rows = DETECTIONS.dims[0]
    det = g.op("Cast", [raw], to=1)
    det = g.op("Slice", [det, g.i64([0]), g.i64([nms.max_det]), g.i64([1])])
    det = g.op("Pad", [det, g.i64([0, 0, 0, 0, rows, 0])])
    det = g.op("Slice", [det, g.i64([0]), g.i64([rows]), g.i64([1])])
    valid = g.op("Greater", [_slice_last(g, det, 4, 5), g.const(max(nms.conf_thres, 0.0))])  # [B, rows, 1]
    box_score_cls = g.op("Mul", [det, g.op("Cast", [valid], to=1)])
    boxes = _clip_to_input(g, _slice_last(g, box_score_cls, 0, 4))
    rest = _slice_last(g, box_score_cls, 4, 6)
    g.nodes.append(helper.make_node("Concat", [boxes, rest], [DETECTIONS.name], axis=2, name="detections_out"))
    count = g.op("ReduceSum", [g.op("Cast", [valid], to=7), g.i64([1])], keepdims=0)  # [B, 1]
    g.nodes.append(helper.make_node("Cast", [count], [NUM_DETECTIONS.name], to=NUM_DETECTIONS.onnx_dtype,
                                    name="num_detections_out"))


def _clip_to_input(g: GraphBuilder, xyxy: str) -> str:
    """Clip boxes (last axis x1, y1, x2, y2) to the input image, as ultralytics clips after NMS."""
    shape = g.op("Cast", [g.op("Shape", [INPUT.name])], to=1)  # [B, H, W, 3]
    h = _slice_last(g, shape, 1, 2)
    w = _slice_last(g, shape, 2, 3)
    limits = g.op("Concat", [w, h, w, h], axis=0)
    return g.op("Max", [g.op("Min", [xyxy, limits]), g.const(0.0)])


def _slice_last(g: GraphBuilder, x: str, start: int, end: int | None) -> str:
    return g.op("Slice", [x, g.i64([start]), g.i64([end if end is not None else 2**62]), g.i64([-1])])


def _np_float(elem_type: int) -> type:
    return np.float16 if elem_type == 10 else np.float32
