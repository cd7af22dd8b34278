"""``quantize``: a statically quantised (INT8, QDQ) copy of a contract model, with its agreement shown.

onnxruntime's quantiser inserts QuantizeLinear/DequantizeLinear pairs around the network's
body, with activation ranges calibrated on letterboxed frames of the user's own videos;
onnxruntime then runs those convolutions as integer kernels. What stays float, and why:

- the contract's pre-processing (uint8 -> float, HWC -> CHW, /255) and the NMS tail: they
  are cheap, and NMS must see the boxes the head computed, not a rounded copy;
- the first convolution: it sees the image at full resolution, and every later layer
  inherits its rounding (first and last layers in float is the usual rule; here it costs
  little, the stem being one convolution of 64);
- every convolution that is not followed by an activation, the branch that feeds it back to
  the feature map it shares with others, and all that follows it to the outputs: for
  YOLOv8/YOLO11 these are the detection head's box and class branches (3 convolutions each,
  per scale), the DFL integral and the box decoding. Their outputs are logits and pixel
  coordinates whose rounding moves boxes and flips scores across the confidence threshold;
- the backbone's last stage (the nodes at the lowest resolution, stride 32, up to the neck's
  first upsampling: in YOLOv8 the last downsampling, C2f and SPPF, whose max-pools of one
  tensor are concatenated for the layers after it). Keeping it float raised F1 from 0.928
  to 0.950 on the trained YOLOv8s for about a tenth of INT8's speed (20.3 -> 18.0 frames/s;
  benchmarks/results/versus.md, against its version at commit 6551ae2).

Activation ranges are the 99.999th percentile of each tensor's histogram, not its extremes:
a few outlier activations no longer stretch the 256 levels over a range the rest never uses
(min-max ranges had given F1 0.88 on the trained YOLOv8s of benchmarks/results/versus.md).
Frames are fed one at a time, so the histograms take the letterbox's shapes as they
come and memory stays that of one frame's activations.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx

from client.contract import DETECTIONS, INPUT, META, NUM_DETECTIONS, ModelInfo
from client.errors import ModelError, UsageError

from .agreement import Agreement, agreement

__all__ = ["QUANTIZED_OPS", "QuantizeSettings", "FrameReader", "float_nodes", "quantize_model", "quantize_file",
           "is_qdq", "detect_frames", "DEFAULT_MIN_F1", "DEFAULT_FRAMES", "DEFAULT_CHECK_FRAMES", "CALIBRATION_PERCENTILE"]

log = logging.getLogger("server_config.model")

DEFAULT_MIN_F1 = 0.95
DEFAULT_FRAMES = 64  # calibration frames
# Held-out frames the agreement is measured on. On benchmarks/versus.py's clips the float model
# finds about one box a frame, and F1 moves with the frames chosen (one quantisation measured
# 0.949 on 160 frames and 0.928 on 351: benchmarks/results/versus.md at 18e35e1 and 6551ae2).
# 400 frames, where the videos have them, keep one box to ~0.003 of F1; --check-frames
# trades that for time.
DEFAULT_CHECK_FRAMES = 400
CALIBRATION_PERCENTILE = 99.999

# The body's ops quantised: convolutions and their SiLU (Sigmoid x Mul), C2f's Split, SPPF's
# MaxPool and the neck's Resize. Concat and Add stay float: they join tensors of different
# ranges, and requantising them cost a trained YOLOv8 2.5 points of matched-box IoU, no speed.
QUANTIZED_OPS = ("Conv", "Sigmoid", "Mul", "Split", "MaxPool", "Resize")


@dataclass(frozen=True)
class QuantizeSettings:
    per_channel: bool = True
    float_head_branches: bool = True  # see float_nodes
    float_deepest_stage: bool = True


class FrameReader:
    """onnxruntime's CalibrationDataReader protocol over letterboxed frames, one frame a batch;
    ``__len__`` and ``set_range`` let the quantiser take them in strides (CalibStridedMinMax)."""

    def __init__(self, frames: Sequence[np.ndarray]) -> None:
        self._frames = frames
        self._it: Iterator[np.ndarray] = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._it, None)
        return None if frame is None else {INPUT.name: frame[None]}

    def rewind(self) -> None:
        self._it = iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self._frames[start_index:end_index])


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node has a unique name (the quantiser excludes nodes by name)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for i, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"framestream/node_{i}_{node.op_type}"
        seen.add(node.name)
    return copy


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _downstream(starts: Iterable[onnx.NodeProto], consumers: dict[str, list[onnx.NodeProto]]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return seen


def float_nodes(model: onnx.ModelProto, *, head_branches: bool = True, deepest_stage: bool = True) -> list[str]:
    """Names of the nodes to leave in float (see the module docstring); ``model``'s nodes must be named.
    ``head_branches`` keeps each output convolution's whole branch float, back to the shared
    feature map it starts from; ``deepest_stage`` the backbone's lowest-resolution stage."""
    graph = model.graph
    consumers = _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    activated = lambda n: any(c.op_type in ("Sigmoid", "Relu", "LeakyRelu", "HardSwish", "Elu")  # noqa: E731
                              for c in consumers.get(n.output[0], []))
    outputs = [n for n in convs if not activated(n)]
    # the first convolution and its activation (graph order is topological)
    stem = [convs[0].name, *(c.name for c in consumers.get(convs[0].output[0], []))] if convs else []
    starts = list(outputs)
    if head_branches:
        for conv in outputs:
            starts.extend(_branch(conv, producer, consumers))
    tail = _downstream(starts, consumers)
    body = _downstream(convs, consumers)
    before_body = {n.name for n in graph.node if n.name not in body}  # pre-processing, Shape of the input
    return sorted(tail | before_body | set(stem) | (_deepest_stage(model) if deepest_stage else set()))


def _deepest_stage(model: onnx.ModelProto, probe_hw: tuple[int, int] = (320, 320)) -> set[str]:
    """The backbone's last stage: the nodes at the network's lowest resolution, from the first
    of them up to the first upsampling (the neck's Resize). Output sizes come from ONNX shape
    inference on a ``probe_hw`` input; where they cannot be inferred, nothing is added."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for dim, value in zip(fixed.graph.input[0].type.tensor_type.shape.dim, (1, *probe_hw, 3)):
        dim.dim_value = value  # replaces the symbolic name (a oneof)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises several types; the model still quantises without this
        log.warning("quantize: no shape inference on this model; its deepest stage is quantised too")
        return set()
    area = {}
    for info in inferred.graph.value_info:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            area[info.name] = dims[2].dim_value * dims[3].dim_value
    conv_areas = [area[n.output[0]] for n in model.graph.node if n.op_type == "Conv" and n.output[0] in area]
    if not conv_areas:
        return set()
    lowest, stage, started = min(conv_areas), set(), False
    for node in model.graph.node:
        if started and node.op_type == "Resize":
            break
        if area.get(node.output[0]) == lowest:
            started = True
            stage.add(node.name)
    return stage


def _branch(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto],
            consumers: dict[str, list[onnx.NodeProto]]) -> list[onnx.NodeProto]:
    """The nodes that feed ``node`` and nothing else (a SiLU's two uses of its input included):
    its private branch, back to the feature map it shares with others."""
    branch = {node.name: node}
    grew = True
    while grew:
        grew = False
        for member in list(branch.values()):
            for name in member.input:
                up = producer.get(name)
                if up is None or up.name in branch:
                    continue
                if all(c.name in branch for out in up.output for c in consumers.get(out, [])):
                    branch[up.name] = up
                    grew = True
    return [n for n in branch.values() if n is not node]


def quantize_model(model: onnx.ModelProto, calibration: Sequence[np.ndarray], *,
                   settings: QuantizeSettings = QuantizeSettings(), source: str) -> onnx.ModelProto:
    """The QDQ model, calibrated on ``calibration`` (letterboxed frames), with ``model``'s
    framestream metadata and ``source`` as its source."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    named = _named(model)
    with tempfile.TemporaryDirectory(prefix="framestream-quantize-") as tmp, _quiet_root_logger():
        out, source_path = Path(tmp) / "model.int8.onnx", Path(tmp) / "model.onnx"
        # A path, not the ModelProto: onnxruntime 1.18 and 1.19 reload an in-memory model from a
        # temporary folder they have already removed (the suite at the lowest versions found it).
        onnx.save(named, str(source_path))
        quantize_static(
            str(source_path),
            str(out),
            FrameReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=float_nodes(named, head_branches=settings.float_head_branches,
                                         deepest_stage=settings.float_deepest_stage),
            per_channel=settings.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            # one frame a stride: each stride's activations are stacked, so shapes never mix
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibStridedMinMax": 1,
                           "CalibPercentile": CALIBRATION_PERCENTILE},
        )
        quantized = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    meta[META.SOURCE] = source
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, meta)
    quantized.producer_name = "framestream"
    return quantized


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser warns on the root logger (advice to pre-process, which the
    contract's dynamic shapes do not need); keep a user's terminal to framestream's lines."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def is_qdq(model: onnx.ModelProto) -> bool:
    ops = {n.op_type for n in model.graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops


def quantize_file(path: Path, videos: Path, *, min_f1: float = DEFAULT_MIN_F1, frames: int = DEFAULT_FRAMES,
                  check_frames: int = DEFAULT_CHECK_FRAMES,
                  settings: QuantizeSettings = QuantizeSettings()) -> tuple[onnx.ModelProto, Agreement]:
    """Quantise the contract model at ``path`` on ``frames`` frames of ``videos``; the model and
    its agreement on ``check_frames`` others. Raises ModelError when the agreement's F1 is below
    ``min_f1``."""
    from .calibration import sample_frames
    from .files import load_onnx

    if not 0.0 <= min_f1 <= 1.0:
        raise UsageError(f"--min-f1 must be between 0 and 1, got {min_f1:g}")
    for option, value in (("--frames", frames), ("--check-frames", check_frames)):
        if value < 1:
            raise UsageError(f"{option} must be at least 1, got {value}")
    model = load_onnx(path)
    if is_qdq(model):
        raise ModelError(f"{path}: already quantised (it has QuantizeLinear/DequantizeLinear nodes); "
                         "quantise the float model")
    reference = _session(model.SerializeToString(), path)
    info = _model_info(reference, path)
    sets = sample_frames(videos, info, calibration=frames, held_out=check_frames)
    expected = detect_frames(reference, sets.held_out)
    if not any(len(d) for d in expected):
        raise ModelError(f"the float model finds nothing on the {len(sets.held_out)} held-out frames from "
                         f"{videos}: agreement cannot be measured; calibrate on videos of what it detects")
    source = (f"{info.source}; INT8 (static QDQ, calibrated on {len(sets.calibration)} frames "
              f"of {sets.videos} video{'s' if sets.videos != 1 else ''})")
    quantized = quantize_model(model, sets.calibration, settings=settings, source=source)
    result = agreement(expected, detect_frames(_session(quantized.SerializeToString(), path), sets.held_out))
    if result.f1 < min_f1:
        raise ModelError(f"not written: F1 {result.f1:.3f} is below --min-f1 {min_f1:g} "
                         f"({result.describe()})")
    return quantized, result


def _session(model: bytes, path: Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from e


def _model_info(session, path: Path) -> ModelInfo:
    from client.infer.embedded import read_model_info

    if META.CONTRACT not in session.get_modelmeta().custom_metadata_map:
        raise ModelError(f"{path}: not a framestream model; wrap the export first "
                         "('python -m server_config.model wrap')")
    return read_model_info(session, path)


def detect_frames(session, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each frame's valid detection rows (x1, y1, x2, y2, score, class)."""
    out = []
    for frame in frames:
        det, num = session.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: frame[None]})
        out.append(det[0, : int(num[0, 0])])
    return out
