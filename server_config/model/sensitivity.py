"""Which convolutions of a quantised model cost the most agreement: measured, not guessed by name.

A candidate is one quantised convolution with the activation on its output (SiLU: Sigmoid and
Mul), the unit that becomes one integer kernel. Its sensitivity is measured by building the
INT8 model with that one candidate kept float (the activation ranges are calibrated once,
``Quantizer``) and comparing the model's pre-NMS outputs with the float model's on a few
frames: the smaller the remaining error, the more that candidate's rounding was costing.

The error is taken where detections are decided: over every (anchor) row whose best class
score is at or above half the confidence threshold in either model, the absolute change of
that score plus the change of its box (the L1 distance of the corners over the float box's
width + height). Rows far below the threshold cannot become detections and are left out,
so the many empty anchors do not drown the few that matter. For an end-to-end export (no NMS
in the graph to read the scores before) the error is 1 - F1 of the detections themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import onnx

from client.contract import INPUT

from .agreement import agreement
from .quantize import Quantizer, detect_frames, ort_session

__all__ = ["Candidate", "Ranked", "candidates", "rank"]

ACTIVATIONS = ("Sigmoid", "Mul", "Relu", "LeakyRelu", "HardSwish")


@dataclass(frozen=True)
class Candidate:
    conv: str  # the convolution's node name; the group is named after it
    nodes: tuple[str, ...]  # the convolution and its activation's nodes


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    error: float  # the output error with this candidate alone kept float (lower: more sensitive)


def candidates(graph: onnx.GraphProto, already_float: Sequence[str]) -> list[Candidate]:
    """Every convolution not already float, with its activation's nodes, in graph order."""
    skip = set(already_float)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out = []
    for node in graph.node:
        if node.op_type != "Conv" or node.name in skip:
            continue
        act = [c.name for c in consumers.get(node.output[0], []) if c.op_type in ACTIVATIONS and c.name not in skip]
        out.append(Candidate(node.name, (node.name, *act)))
    return out


class _Probe:
    """The pre-NMS best-class score [N] and xyxy box [N, 4] of each frame, read from any copy
    of the contract graph (the names survive quantisation: the tail after the head stays float)."""

    def __init__(self, graph: onnx.GraphProto, conf_thres: float) -> None:
        producer = {o: n for n in graph.node for o in n.output}
        nms = next((n for n in graph.node if n.op_type == "NonMaxSuppression"), None)
        self.names: tuple[str, str] | None = None
        if nms is not None:
            unsqueeze, shifted = producer.get(nms.input[1]), producer.get(nms.input[0])
            score = unsqueeze.input[0] if unsqueeze is not None and unsqueeze.op_type == "Unsqueeze" else None
            boxes = shifted.input[0] if shifted is not None and shifted.op_type == "Add" else None
            if score and boxes:
                self.names = (score, boxes)  # [B, N] best score, [B, N, 4] xyxy before the class offset
        self.live = conf_thres / 2

    def outputs(self, model: onnx.ModelProto, frames: Sequence[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        assert self.names is not None
        for name in self.names:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
        session = ort_session(probe.SerializeToString())
        return [tuple(o[0] for o in session.run(list(self.names), {INPUT.name: f[None]})) for f in frames]

    def error(self, reference: list[tuple[np.ndarray, ...]], candidate: list[tuple[np.ndarray, ...]]) -> float:
        total = 0.0
        for (score_f, box_f), (score_q, box_q) in zip(reference, candidate):
            live = (score_f >= self.live) | (score_q >= self.live)
            size = (box_f[live, 2] - box_f[live, 0]) + (box_f[live, 3] - box_f[live, 1])
            total += float(np.abs(score_q[live] - score_f[live]).sum())
            total += float((np.abs(box_q[live] - box_f[live]).sum(axis=1) / np.maximum(size, 1.0)).sum())
        return total


def rank(quantizer: Quantizer, float_model: onnx.ModelProto, pool: Sequence[Candidate],
         frames: Sequence[np.ndarray], *, conf_thres: float,
         on_candidate: Callable[[], None] = lambda: None) -> list[Ranked]:
    """``pool`` ranked most sensitive first, each measured on ``frames``."""
    probe = _Probe(quantizer.graph, conf_thres)
    if probe.names is not None:
        reference = probe.outputs(float_model, frames)

        def error(model: onnx.ModelProto) -> float:
            return probe.error(reference, probe.outputs(model, frames))
    else:
        expected = detect_frames(ort_session(float_model.SerializeToString()), frames)

        def error(model: onnx.ModelProto) -> float:
            return 1.0 - agreement(expected, detect_frames(ort_session(model.SerializeToString()), frames)).f1

    ranked = []
    for candidate in pool:
        ranked.append(Ranked(candidate, error(quantizer.build(candidate.nodes))))
        on_candidate()
    return sorted(ranked, key=lambda r: r.error)
