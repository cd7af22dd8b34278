"""``wrap``: put a user's YOLO export inside the serving contract.

The export's graph is kept as it is; its input is fed by the contract's preprocessing and
its output by the contract's NMS (or, for an ``nms=True`` export, only by the count).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import onnx
from onnx import TensorProto, version_converter

from client.contract import DEFAULT_IMGSZ, NMS, ModelInfo, NmsSettings

from .build import contract_io
from .contract_graph import HeadLayout, add_postprocess, add_preprocess
from .graph import GraphBuilder, make_model
from client.errors import ModelError, UsageError

_EXPORT_IN = "framestream/export_input"
_EXPORT_OUT = "framestream/export_output"
_MIN_OPSET = 13  # Split/Squeeze/ReduceSum take axes as inputs from 13 on
_END_TO_END_MAX_ROWS = 1000  # an nms=True export keeps at most max_det rows; raw heads have thousands


def wrap_model(export: onnx.ModelProto, *, source: str, nms: NmsSettings = NMS) -> onnx.ModelProto:
    """Return a contract model around ``export``; raises ModelError naming what doesn't fit.
    ``nms``: the post-processing appended and stored in the metadata. An ``nms=True`` export
    ran its own NMS: only ``conf_thres`` (raising its threshold) and ``max_det`` apply."""
    export = _at_least_opset(_copy(export), _MIN_OPSET)
    graph = export.graph
    image, batch, height, width = _image_input(export)
    out = _single_output(graph)
    layout, num_classes = detect_layout(_dims(out), export)
    if layout is HeadLayout.END_TO_END and nms.iou_thres != NMS.iou_thres:
        raise UsageError("--iou cannot change the NMS of an nms=True export (it ran its own); "
                         "export without nms=True to choose the IoU threshold")
    names = _class_names(export, num_classes)
    meta = {p.key: p.value for p in export.metadata_props}
    imgsz = (height, width) if height and width else tuple(_meta_imgsz(meta))

    _rename(graph, image.name, _EXPORT_IN)
    _rename(graph, out.name, _EXPORT_OUT)
    g = GraphBuilder(prefix="framestream/", opset=_onnx_opset(export))
    pre = add_preprocess(g, image.type.tensor_type.elem_type)
    g.nodes.append(onnx.helper.make_node("Identity", [pre], [_EXPORT_IN], name="framestream/to_export"))
    g.nodes.extend(graph.node)
    g.initializers.extend(graph.initializer)
    add_postprocess(g, _EXPORT_OUT, layout, nms)

    info = ModelInfo(
        imgsz=imgsz,
        dynamic_hw=not (height and width),
        max_batch=batch,
        names=names,
        nms=nms,
        source=source,
    )
    inputs, outputs = contract_io(height or "height", width or "width", batch or "batch")
    other_opsets = [o for o in export.opset_import if o.domain not in ("", "ai.onnx")]
    model = make_model(g, inputs, outputs, metadata=info.to_metadata(), graph_name="wrapped", extra_opsets=other_opsets)
    model.ir_version = max(model.ir_version, export.ir_version)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"the wrapped model is not valid ONNX: {str(e).splitlines()[0]}") from e
    return model


def detect_layout(dims: list[int | None], export: onnx.ModelProto | None = None) -> tuple[HeadLayout, int]:
    """Tell the head layout from the output shape; return it with the number of classes."""
    if len(dims) != 3:
        raise ModelError(f"no YOLO head: the output has shape {_fmt(dims)}, expected 3 axes [batch, ..., ...]")
    _, d1, d2 = dims
    if d2 == 6 and d1 is not None and d1 <= _END_TO_END_MAX_ROWS:
        return HeadLayout.END_TO_END, _names_count(export)
    if d1 is not None and d1 >= 5 and (d2 is None or d1 < d2):
        return HeadLayout.ULTRALYTICS, d1 - 4
    if d2 is not None and d2 >= 6 and (d1 is None or d2 < d1):
        return HeadLayout.YOLOV5, d2 - 5
    raise ModelError(
        f"unknown output layout {_fmt(dims)}: expected [B, 4+nc, N] (YOLOv8/11), "
        "[B, N, 5+nc] (YOLOv5) or [B, max_det, 6] (export with nms=True)"
    )


def _image_input(export: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, int | None, int | None, int | None]:
    initializers = {t.name for t in export.graph.initializer}
    inputs = [i for i in export.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"expected one image input, found {len(inputs)}: {[i.name for i in inputs]}")
    image = inputs[0]
    dims = _dims(image)
    elem = image.type.tensor_type.elem_type
    if len(dims) != 4 or dims[1] != 3 or elem not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise ModelError(
            f"no YOLO image input: {image.name!r} is {_fmt(dims)} "
            f"{TensorProto.DataType.Name(elem)}, expected float [B, 3, H, W]"
        )
    return image, dims[0], dims[2], dims[3]


def _single_output(graph: onnx.GraphProto) -> onnx.ValueInfoProto:
    if not graph.output:
        raise ModelError("the model has no outputs")
    return graph.output[0]  # ultralytics puts the detection head first (segment/pose add more)


def _class_names(export: onnx.ModelProto, num_classes: int) -> dict[int, str]:
    meta = {p.key: p.value for p in export.metadata_props}
    if "names" in meta:
        try:
            raw = ast.literal_eval(meta["names"])  # ultralytics writes str(dict)
        except (ValueError, SyntaxError):
            raw = json.loads(meta["names"])
        return {int(k): str(v) for k, v in raw.items()}
    return {i: f"class{i}" for i in range(num_classes)}


def _names_count(export: onnx.ModelProto | None) -> int:
    return len(_class_names(export, 0)) if export is not None else 0


def _meta_imgsz(meta: dict[str, str]) -> list[int]:
    if "imgsz" in meta:
        value = ast.literal_eval(meta["imgsz"])
        return [int(v) for v in (value if isinstance(value, (list, tuple)) else (value, value))]
    return [DEFAULT_IMGSZ, DEFAULT_IMGSZ]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _fmt(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _onnx_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    if _onnx_opset(model) >= opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises plain RuntimeError/ValueError
        raise ModelError(f"could not convert the export from opset {_onnx_opset(model)} to {opset}: {e}") from e


def wrap_file(path: Path, *, nms: NmsSettings = NMS) -> onnx.ModelProto:
    from .files import load_onnx

    return wrap_model(load_onnx(path), source=f"wrapped {path.name}", nms=nms)
