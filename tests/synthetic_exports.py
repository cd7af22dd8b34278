"""Tiny stand-ins for users' YOLO exports, built with onnx.helper: same I/O layouts, few weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from server_config.model.contract_graph import HeadLayout
from server_config.model.graph import GraphBuilder, value_info

STRIDE = 8


def make_export(
    layout: HeadLayout, *, nc: int = 3, batch: int | None = None, hw: tuple[int, int] | None = None,
    names: dict[int, str] | None = None, opset: int = 17, max_det: int = 300,
) -> onnx.ModelProto:
    """An 'export' whose head is a strided conv: boxes and scores depend on the pixels."""
    g = GraphBuilder(prefix="export/", opset=opset)
    rng = np.random.default_rng(1)
    ch = 4 + nc if layout is HeadLayout.ULTRALYTICS else 5 + nc if layout is HeadLayout.YOLOV5 else 6
    w = rng.normal(0, 0.15, size=(ch, 3, STRIDE, STRIDE)).astype(np.float32)
    feat = g.op("Sigmoid", [g.op("Conv", ["images", g.const(w)], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE])])
    shape = g.op("Cast", [g.op("Shape", ["images"])], to=1)
    h_in = g.op("Slice", [shape, g.i64([2]), g.i64([3])])
    w_in = g.op("Slice", [shape, g.i64([3]), g.i64([4])])
    flat = g.op("Reshape", [feat, g.i64([0, ch, -1])])  # [B, ch, N]
    if layout is HeadLayout.END_TO_END:
        rows = g.op("Transpose", [flat], perm=[0, 2, 1])  # [B, N, 6]
        rows = g.op("Slice", [rows, g.i64([0]), g.i64([max_det]), g.i64([1])])
        x1y1 = g.op("Mul", [g.op("Slice", [rows, g.i64([0]), g.i64([2]), g.i64([2])]),
                            g.op("Concat", [w_in, h_in], axis=0)])
        x2y2 = g.op("Add", [x1y1, g.const([40.0, 30.0])])
        score = g.op("Slice", [rows, g.i64([4]), g.i64([5]), g.i64([2])])
        keep = g.op("Cast", [g.op("Greater", [score, g.const(0.5)])], to=1)
        cls = g.op("Floor", [g.op("Mul", [g.op("Slice", [rows, g.i64([5]), g.i64([6]), g.i64([2])]), g.const(3.0)])])
        out = g.op("Mul", [g.op("Concat", [x1y1, x2y2, score, cls], axis=2), keep])
        out_shape = [batch or "batch", max_det, 6]
    else:
        # centre x, y scaled to the frame, w, h up to a quarter of it, then scores.
        scale = g.op("Concat", [w_in, h_in, g.op("Div", [w_in, g.const([4.0])]), g.op("Div", [h_in, g.const([4.0])]),
                                g.const(np.ones(ch - 4, np.float32))], axis=0)
        out = g.op("Mul", [flat, g.op("Reshape", [scale, g.i64([-1, 1])])])
        out_shape = [batch or "batch", ch, "anchors"]
        if layout is HeadLayout.YOLOV5:
            out = g.op("Transpose", [out], perm=[0, 2, 1])
            out_shape = [batch or "batch", "anchors", ch]
    g.nodes.append(helper.make_node("Identity", [out], ["output0"]))
    h, wd = hw if hw else ("height", "width")
    graph = helper.make_graph(
        g.nodes, "export", [value_info("images", TensorProto.FLOAT, [batch or "batch", 3, h, wd])],
        [value_info("output0", TensorProto.FLOAT, out_shape)], g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if names is not None:
        helper.set_model_props(model, {"names": repr(names), "imgsz": repr(list(hw) if hw else [320, 320])})
    return model
