"""``build``: a YOLOv8 network with seeded untrained weights, wrapped in the serving contract."""

from __future__ import annotations

import onnx

from client.contract import COCO_NAMES, DEFAULT_IMGSZ, DETECTIONS, INPUT, NMS, NUM_DETECTIONS, STRIDE, ModelInfo, NmsSettings
from client.errors import UsageError

from .contract_graph import HeadLayout, add_postprocess, add_preprocess
from .graph import FLOAT, GraphBuilder, make_model, value_info
from .untrained import UNTRAINED_KEY, UNTRAINED_VALUE
from .yolov8 import SCALES, build_raw_yolov8

DEFAULT_SEED = 0


def build_model(*, size: str = "n", imgsz: int = DEFAULT_IMGSZ, seed: int = DEFAULT_SEED,
                nms: NmsSettings = NMS) -> onnx.ModelProto:
    """YOLOv8-``size`` for 80 classes; H and W dynamic (multiples of 32, long side <= imgsz);
    ``nms``: the post-processing built in and stored in the metadata (the client reads it)."""
    if size not in SCALES:
        raise UsageError(f"unknown model size {size!r}; choose one of {', '.join(SCALES)}")
    if imgsz <= 0 or imgsz % STRIDE:
        raise UsageError(f"--imgsz must be a positive multiple of {STRIDE}, got {imgsz}")
    g = GraphBuilder()
    x = add_preprocess(g, FLOAT)
    raw = build_raw_yolov8(g, x, size=size, num_classes=len(COCO_NAMES), seed=seed)
    add_postprocess(g, raw, HeadLayout.ULTRALYTICS, nms)
    info = ModelInfo(
        imgsz=(imgsz, imgsz),
        dynamic_hw=True,
        max_batch=None,
        names=dict(enumerate(COCO_NAMES)),
        nms=nms,
        source=f"framestream yolov8{size} seed {seed}, UNTRAINED weights",
    )
    metadata = {**info.to_metadata(), UNTRAINED_KEY: UNTRAINED_VALUE}  # runs on it say so; wrap may replace it
    return make_model(g, *contract_io(), metadata=metadata, graph_name=f"yolov8{size}")


def contract_io(height: int | str = "height", width: int | str = "width", batch: int | str = "batch"):
    """The contract's graph inputs and outputs as ONNX value infos."""
    inputs = [value_info(INPUT.name, INPUT.onnx_dtype, [batch, height, width, INPUT.dims[-1]])]
    outputs = [
        value_info(DETECTIONS.name, DETECTIONS.onnx_dtype, [batch, *DETECTIONS.dims]),
        value_info(NUM_DETECTIONS.name, NUM_DETECTIONS.onnx_dtype, [batch, *NUM_DETECTIONS.dims]),
    ]
    return inputs, outputs
