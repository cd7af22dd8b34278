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

Where that model still misses the agreement gate, ``deliver.py`` keeps more convolutions float,
chosen by their measured sensitivity (``sensitivity.py``), from the same calibration.

Activation ranges are the 99.999th percentile of each tensor's histogram, not its extremes:
a few outlier activations no longer stretch the 256 levels over a range the rest never uses
(min-max ranges had given F1 0.88 on the trained YOLOv8s of benchmarks/results/versus.md).
Frames are fed one at a time, so the histograms take the letterbox's shapes as they
come and memory stays that of one frame's activations.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx

from client.contract import DETECTIONS, INPUT, META, NUM_DETECTIONS, ModelInfo
from client.errors import ModelError


__all__ = ["QUANTIZED_OPS", "QuantizeSettings", "FrameReader", "Quantizer", "float_nodes", "quantize_model",
           "is_qdq", "detect_frames", "ort_session", "load_session", "model_info", "quiet_onnxruntime",
           "DEFAULT_MIN_F1", "DEFAULT_FRAMES", "DEFAULT_CHECK_FRAMES", "CALIBRATION_PERCENTILE"]

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

    def __init__(self, frames: Sequence[np.ndarray], on_frame: Callable[[], None] = lambda: None) -> None:
        self._frames = frames
        self._on_frame = on_frame  # progress: called as each frame is handed to the calibrator
        self._it: Iterator[np.ndarray] = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(self._it, None)
        if frame is None:
            return None
        self._on_frame()
        return {INPUT.name: frame[None]}

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


class Quantizer:
    """Calibrates a contract model once, then builds QDQ copies of it from the same activation
    ranges, each with any extra nodes kept float: the search for the layers to keep float
    (``mixed.py``) builds dozens of them, and calibration is the slow part.

    onnxruntime's ``quantize_static`` calibrates on every call; this wraps the calibrator it
    creates, so that the first call records the ranges and later ones replay them (the same
    public entry point on every onnxruntime from 1.19, which has no cache of ranges)."""

    def __init__(self, model: onnx.ModelProto, *, settings: QuantizeSettings = QuantizeSettings(),
                 source: str) -> None:
        self._named = _named(model)
        self._settings = settings
        self._meta = {p.key: p.value for p in model.metadata_props}
        self._meta[META.SOURCE] = source
        self.base_float = tuple(float_nodes(self._named, head_branches=settings.float_head_branches,
                                            deepest_stage=settings.float_deepest_stage))
        self._tmp = tempfile.TemporaryDirectory(prefix="framestream-quantize-")
        # A path, not the ModelProto: onnxruntime 1.18 and 1.19 reload an in-memory model from a
        # temporary folder they have already removed (the suite at the lowest versions found it).
        self._source_path = Path(self._tmp.name) / "model.onnx"
        onnx.save(self._named, str(self._source_path))
        self._ranges: dict[str, object] = {}

    @property
    def graph(self) -> onnx.GraphProto:
        """The float graph, every node named as the QDQ copies name them."""
        return self._named.graph

    def calibrate(self, frames: Sequence[np.ndarray], on_frame: Callable[[], None] = lambda: None) -> None:
        """Activation ranges from ``frames`` (letterboxed), kept for every :meth:`build`."""
        self._quantize(FrameReader(frames, on_frame), ())

    def build(self, keep_float: Iterable[str] = (), *, note: str = "",
              extra_meta: dict[str, str] | None = None) -> onnx.ModelProto:
        """The QDQ model with ``keep_float`` left float besides the usual float nodes; ``note``
        is added to its source. Needs :meth:`calibrate` first."""
        if "ranges" not in self._ranges:
            raise RuntimeError("Quantizer.build before calibrate")
        quantized = self._quantize(FrameReader([]), tuple(keep_float))
        meta = dict(self._meta)
        if note:
            meta[META.SOURCE] = f"{meta[META.SOURCE]}; {note}"
        meta.update(extra_meta or {})
        del quantized.metadata_props[:]
        onnx.helper.set_model_props(quantized, meta)
        quantized.producer_name = "framestream"
        return quantized

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> "Quantizer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _quantize(self, reader: "FrameReader", keep_float: tuple[str, ...]) -> onnx.ModelProto:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        out = Path(self._tmp.name) / "model.int8.onnx"
        with quiet_onnxruntime(), _ranges_kept(self._ranges):
            quantize_static(
                str(self._source_path),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=sorted({*self.base_float, *keep_float}),
                per_channel=self._settings.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.Percentile,
                # one frame a stride: each stride's activations are stacked, so shapes never mix
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibStridedMinMax": 1,
                               "CalibPercentile": CALIBRATION_PERCENTILE},
            )
        return onnx.load(str(out))


def quantize_model(model: onnx.ModelProto, calibration: Sequence[np.ndarray], *,
                   settings: QuantizeSettings = QuantizeSettings(), source: str) -> onnx.ModelProto:
    """The QDQ model, calibrated on ``calibration`` (letterboxed frames), with ``model``'s
    framestream metadata and ``source`` as its source."""
    with Quantizer(model, settings=settings, source=source) as quantizer:
        quantizer.calibrate(calibration)
        return quantizer.build()


class _Recording:
    """A calibrator that keeps what it computes in ``store``."""

    def __init__(self, calibrator: object, store: dict[str, object]) -> None:
        self._calibrator, self._store = calibrator, store

    def collect_data(self, reader: object) -> None:
        self._calibrator.collect_data(reader)  # type: ignore[attr-defined]

    def compute_data(self) -> object:
        self._store["ranges"] = self._calibrator.compute_data()  # type: ignore[attr-defined]
        return self._store["ranges"]


class _Replay:
    """A calibrator that reads no frame and returns the recorded ranges."""

    def __init__(self, ranges: object) -> None:
        self._ranges = ranges

    def collect_data(self, reader: object) -> None:
        pass

    def compute_data(self) -> object:
        return self._ranges


@contextlib.contextmanager
def _ranges_kept(store: dict[str, object]) -> Iterator[None]:
    import importlib

    # the module (``onnxruntime.quantization.quantize`` is also the name of a function there)
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")
    real = ort_quantize.create_calibrator

    def create(*args: object, **kwargs: object) -> object:
        if "ranges" in store:
            return _Replay(store["ranges"])
        return _Recording(real(*args, **kwargs), store)

    ort_quantize.create_calibrator = create
    try:
        yield
    finally:
        ort_quantize.create_calibrator = real


@contextlib.contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    """onnxruntime's quantiser warns on the root logger (advice to pre-process, which the
    contract's dynamic shapes do not need), prints a line on stdout for every calibration
    stride ("Collecting tensor data and making histogram ...": 64 identical lines for 64
    frames), and its sessions log graph warnings; keep a user's terminal to framestream's lines."""
    import onnxruntime as ort

    root, ours = logging.getLogger(), log
    level, our_level = root.level, ours.level
    ours.setLevel(ours.getEffectiveLevel())  # framestream's own lines (progress) still pass
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
        ours.setLevel(our_level)
        ort.set_default_logger_severity(2)  # onnxruntime's default: warnings


def is_qdq(model: onnx.ModelProto) -> bool:
    ops = {n.op_type for n in model.graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops


def ort_session(model: bytes):
    """A CPU session whose graph warnings stay out of the user's terminal."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_session(model: bytes, path: Path):
    """:func:`ort_session`, failing as one ModelError line that names ``path``."""
    try:
        return ort_session(model)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:160]})") from e


def model_info(session, path: Path) -> ModelInfo:
    from client.infer.embedded import read_model_info

    if META.CONTRACT not in session.get_modelmeta().custom_metadata_map:
        raise ModelError(f"{path}: not a framestream model; wrap the export first "
                         "('python -m server_config.model wrap')")
    return read_model_info(session, path)


def detect_frames(session, frames: Sequence[np.ndarray],
                  on_frame: Callable[[], None] = lambda: None) -> list[np.ndarray]:
    """Each frame's valid detection rows (x1, y1, x2, y2, score, class)."""
    out = []
    for frame in frames:
        det, num = session.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: frame[None]})
        out.append(det[0, : int(num[0, 0])])
        on_frame()
    return out
