"""``quantize`` end to end: an INT8 model that holds the gate, with as much integer work as it can keep.

1. Calibrate once (``Quantizer``) and build the INT8 model; measure its agreement first on an
   early quarter of the check frames (spread over them), then, if that holds the gate, on all.
2. Below the gate, measure each quantised convolution's sensitivity (``sensitivity.py``) and
   check at once, on the early frames, the most float model that still gains anything (every
   candidate float but the least sensitive): if even that misses the gate, the run is
   hopeless and stops there, in minutes, saying what to do.
3. Otherwise keep convolutions float, most sensitive first, one more a step, until the gate
   holds on the early frames and then on all of them; write that model, saying which stayed
   float, and the speed it kept against the float model's (``speed.py``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from client.errors import ModelError, QuantizationError, UsageError

from .agreement import Agreement, agreement
from .quantize import (DEFAULT_CHECK_FRAMES, DEFAULT_FRAMES, DEFAULT_MIN_F1, QuantizeSettings, Quantizer,
                       detect_frames, is_qdq, load_session, model_info)
from .sensitivity import Ranked, candidates, rank
from .speed import Speed, side_by_side
from .steps import Step

__all__ = ["Delivered", "quantize_file", "KEPT_FLOAT_KEY", "EARLY_SHARE", "EARLY_MIN_FRAMES"]

log = logging.getLogger("server_config.model")

KEPT_FLOAT_KEY = "framestream_int8_kept_float"  # metadata: JSON list of the convolutions kept float
EARLY_SHARE = 4  # the early check: a quarter of the check frames ...
EARLY_MIN_FRAMES = 8  # ... and at least this many
SENSITIVITY_FRAMES = 8  # calibration frames each candidate's output error is measured on
SPEED_FRAMES = 16


@dataclass(frozen=True)
class Delivered:
    model: onnx.ModelProto
    agreement: Agreement
    kept_float: tuple[str, ...]  # convolutions kept float by measured sensitivity, most sensitive first
    candidates: int  # convolutions that could be INT8
    speed: Speed

    def describe_mix(self) -> str:
        if not self.kept_float:
            return f"all {self.candidates} quantisable convolutions are INT8"
        return (f"{len(self.kept_float)} of {self.candidates} quantisable convolutions kept float by measured "
                f"sensitivity: {', '.join(self.kept_float)}")


def _plus(a: Agreement, b: Agreement) -> Agreement:
    return Agreement(a.frames + b.frames, a.reference_boxes + b.reference_boxes, a.boxes + b.boxes,
                     a.matched + b.matched, a.iou_sum + b.iou_sum)


class _Checks:
    """The held-out frames, split into an early share (spread evenly over them) and the rest;
    the float model's detections on each, computed when first needed."""

    def __init__(self, frames: Sequence[np.ndarray], reference) -> None:
        n = len(frames)
        share = min(n, max(EARLY_MIN_FRAMES, n // EARLY_SHARE))
        picked = set(np.linspace(0, n - 1, share).round().astype(int).tolist())
        self.total = n
        self.early = [f for i, f in enumerate(frames) if i in picked]
        self.rest = [f for i, f in enumerate(frames) if i not in picked]
        self._reference = reference
        self.expected_early = self._detect(reference, self.early, "float model, early check frames")
        self._expected_rest: list[np.ndarray] | None = None
        if not any(len(d) for d in self.expected_early):  # nothing to judge on: check on all of them
            self.early, self.expected_early = self.early + self.rest, self.expected_early + self.expected_rest()
            self.rest, self._expected_rest = [], []

    def expected_rest(self) -> list[np.ndarray]:
        if self._expected_rest is None:
            self._expected_rest = self._detect(self._reference, self.rest, "float model, other check frames")
        return self._expected_rest

    def on_early(self, session, label: str | None = None) -> Agreement:
        return agreement(self.expected_early, self._detect(session, self.early, label))

    def on_all(self, session, early: Agreement, label: str) -> Agreement:
        """``early`` (this session's agreement on the early frames) with the rest's."""
        expected = self.expected_rest()
        return _plus(early, agreement(expected, self._detect(session, self.rest, label)))

    @staticmethod
    def _detect(session, frames: Sequence[np.ndarray], label: str | None) -> list[np.ndarray]:
        if label is None or not frames:
            return detect_frames(session, frames)
        step = Step(f"checking, {label}", len(frames))
        return detect_frames(session, frames, step.advance)


def quantize_file(path: Path, videos: Path, *, min_f1: float = DEFAULT_MIN_F1, frames: int = DEFAULT_FRAMES,
                  check_frames: int = DEFAULT_CHECK_FRAMES,
                  settings: QuantizeSettings = QuantizeSettings()) -> Delivered:
    """The INT8 (or INT8 and float) copy of the contract model at ``path``, calibrated on
    ``frames`` frames of ``videos``, whose agreement with the float model on ``check_frames``
    others holds ``min_f1``. Raises ModelError when only the float model itself would."""
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
    reference = load_session(model.SerializeToString(), path)
    info = model_info(reference, path)
    sets = sample_frames(videos, info, calibration=frames, held_out=check_frames)
    log.info("quantize: %d calibration frames and %d check frames from %d video%s", len(sets.calibration),
             len(sets.held_out), sets.videos, "s" if sets.videos != 1 else "")
    checks = _Checks(sets.held_out, reference)
    if not any(len(d) for d in checks.expected_early) and not any(len(d) for d in checks.expected_rest()):
        raise ModelError(f"the float model finds nothing on the {len(sets.held_out)} held-out frames from "
                         f"{videos}: agreement cannot be measured; calibrate on videos of what it detects")
    source = (f"{info.source}; INT8 (static QDQ, calibrated on {len(sets.calibration)} frames "
              f"of {sets.videos} video{'s' if sets.videos != 1 else ''})")
    with Quantizer(model, settings=settings, source=source) as quantizer:
        step = Step("calibrating", len(sets.calibration))
        quantizer.calibrate(sets.calibration, step.advance)
        search = _Search(quantizer, model, checks, min_f1, path)
        chosen, result, kept, pool = search.run(sets.calibration[:SENSITIVITY_FRAMES], info.nms.conf_thres)
        speed = side_by_side(load_session(chosen.SerializeToString(), path), reference,
                             sets.held_out[:SPEED_FRAMES])
    return Delivered(chosen, result, kept, pool, speed)


class _Search:
    """Steps 1-3 of the module docstring, over one calibrated ``Quantizer``."""

    def __init__(self, quantizer: Quantizer, float_model: onnx.ModelProto, checks: _Checks, min_f1: float,
                 path: Path) -> None:
        self.q, self.float_model, self.checks, self.min_f1, self.path = quantizer, float_model, checks, min_f1, path

    def _session(self, model: onnx.ModelProto):
        return load_session(model.SerializeToString(), self.path)

    def run(self, sensitivity_frames: Sequence[np.ndarray],
            conf_thres: float) -> tuple[onnx.ModelProto, Agreement, tuple[str, ...], int]:
        pool = candidates(self.q.graph, self.q.base_float)
        plain = self.q.build()
        session = self._session(plain)
        early = self.checks.on_early(session, "INT8, early frames")
        log.info("quantize: INT8: F1 %.3f on %d early check frames (--min-f1 %g)", early.f1, early.frames, self.min_f1)
        if early.f1 >= self.min_f1:
            full = self.checks.on_all(session, early, "INT8, other frames")
            if full.f1 >= self.min_f1:
                return plain, full, (), len(pool)
            short = f"F1 {full.f1:.3f} on all {full.frames} check frames"
        else:
            short = f"F1 {early.f1:.3f} on {early.frames} early check frames"
        log.info("quantize: INT8 %s is below --min-f1 %g: measuring each of the %d quantised convolutions' "
                 "sensitivity, to keep the most sensitive float", short, self.min_f1, len(pool))
        step = Step("measuring sensitivity", len(pool), unit="convolutions")
        ranking = rank(self.q, self.float_model, pool, sensitivity_frames, conf_thres=conf_thres,
                       on_candidate=step.advance)
        self._stop_if_hopeless(ranking)
        start = time.monotonic()
        for k in range(1, len(ranking)):
            kept = tuple(r.candidate.conv for r in ranking[:k])
            model = self._build(ranking[:k], len(pool))
            session = self._session(model)
            early = self.checks.on_early(session)
            each_s = (time.monotonic() - start) / k
            log.info("quantize: keeping %d of %d convolutions float (+ %s): F1 %.3f on %d early check frames "
                     "(%d steps at most to go, about %.0f s)", k, len(pool), kept[-1], early.f1, early.frames,
                     len(ranking) - 1 - k, each_s * (len(ranking) - 1 - k))
            if early.f1 < self.min_f1:
                continue
            full = self.checks.on_all(session, early, f"{k} convolutions float, other frames")
            log.info("quantize: keeping %d of %d convolutions float: F1 %.3f on all %d check frames",
                     k, len(pool), full.f1, full.frames)
            if full.f1 >= self.min_f1:
                return model, full, kept, len(pool)
        raise QuantizationError(f"not written: no mix of INT8 and float convolutions short of the whole float model "
                         f"reached --min-f1 {self.min_f1:g} on the {self.checks.total} check frames; "
                         "lower --min-f1, or keep the float model")

    def _build(self, kept: Sequence[Ranked], pool: int) -> onnx.ModelProto:
        nodes = [n for r in kept for n in r.candidate.nodes]
        return self.q.build(nodes, note=f"{len(kept)} of {pool} convolutions kept float by measured sensitivity",
                            extra_meta={KEPT_FLOAT_KEY: json.dumps([r.candidate.conv for r in kept])})

    def _stop_if_hopeless(self, ranking: list[Ranked]) -> None:
        """Stops when even the most float mix that still has INT8 work misses the gate early."""
        hint = "lower --min-f1, or keep the float model"
        if len(ranking) < 2:
            raise QuantizationError(f"stopped early: INT8 misses --min-f1 {self.min_f1:g} and the model has "
                             f"{len(ranking)} convolution to trade for float; {hint}")
        most_float = self.checks.on_early(self._session(self._build(ranking[:-1], len(ranking))),
                                          f"{len(ranking) - 1} of {len(ranking)} convolutions float, early frames")
        log.info("quantize: with all but one of %d convolutions float: F1 %.3f on %d early check frames",
                 len(ranking), most_float.f1, most_float.frames)
        if most_float.f1 < self.min_f1:
            raise QuantizationError(f"stopped early: even with {len(ranking) - 1} of the {len(ranking)} quantisable "
                             f"convolutions kept float, F1 {most_float.f1:.3f} on {most_float.frames} of the "
                             f"{self.checks.total} check frames is below --min-f1 {self.min_f1:g}: "
                             f"no INT8 model can hold this gate; {hint}")
