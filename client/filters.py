"""``--classes`` and ``--conf``: keep some of a model's detections, in the client.

The model's NMS already dropped everything at or under its built-in threshold (stored in its
metadata, read into :class:`~client.contract.ModelInfo`), so ``--conf`` can only raise it;
asking for less says how to rebuild or rewrap the model with a lower one. Classes are named
by id or by the model's own class names. A filter is part of the resume ledger's options, so
a rerun with other filters redoes the videos instead of keeping another filter's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .contract import ModelInfo
from .detections import Detections
from .errors import UsageError
from .limits import ascii_digits
from .sinks import PostProcessingWriter

__all__ = ["DetectionFilter", "make_filter", "resolve_classes", "FilteredSink"]


@dataclass(frozen=True)
class DetectionFilter:
    """Which detections to keep: ``class_ids`` (None: all) scoring above ``min_score`` (None: all)."""

    class_ids: frozenset[int] | None = None
    min_score: float | None = None

    @property
    def active(self) -> bool:
        return self.class_ids is not None or self.min_score is not None

    def options(self) -> dict[str, object]:
        """The filter as resume-ledger options; empty when it keeps everything, so runs without
        one resume the records of runs made before filters existed."""
        out: dict[str, object] = {}
        if self.class_ids is not None:
            out["classes"] = sorted(self.class_ids)
        if self.min_score is not None:
            out["conf"] = self.min_score
        return out

    def apply(self, d: Detections) -> Detections:
        keep = np.ones(len(d), bool)
        if self.class_ids is not None:
            keep &= np.isin(d.class_id, np.fromiter(self.class_ids, np.int32, len(self.class_ids)))
        if self.min_score is not None:
            keep &= d.confidence > np.float32(self.min_score)  # as the model's own threshold: strictly above
        if keep.all():
            return d
        return d.take(keep)


def _key(name: str) -> str:
    return name.strip().casefold().replace("_", " ")


def resolve_classes(text: str, names: Mapping[int, str]) -> frozenset[int]:
    """``"person,car,7"`` -> class ids: ids as they are, names as the model spells them (case and
    '_' for ' ' do not matter). An unknown one is a UsageError listing the model's classes."""
    by_name = {_key(n): i for i, n in names.items()}
    ids: set[int] = set()
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if ascii_digits(token):
            cid = int(token)
            if names and cid not in names:
                raise UsageError(f"--classes: no class id {cid} in this model (ids 0-{max(names)}); "
                                 f"its classes: {_listing(names)}")
            ids.add(cid)
        elif _key(token) in by_name:
            ids.add(by_name[_key(token)])
        elif names:
            raise UsageError(f"--classes: no class {token!r} in this model; its classes: {_listing(names)}")
        else:
            raise UsageError(f"--classes: {token!r}: this model declares no class names; give class ids")
    if not ids:
        raise UsageError("--classes: give class ids or names, comma-separated (e.g. --classes person,car)")
    return frozenset(ids)


def _listing(names: Mapping[int, str]) -> str:
    return ", ".join(f"{i} {n}" for i, n in sorted(names.items()))


def make_filter(classes: str | None, conf: float | None, model: ModelInfo, *, served: bool = False) -> DetectionFilter:
    """The filter ``--classes`` and ``--conf`` ask for, checked against ``model``; ``served``:
    the model is Triton's (the advice then says to serve the rebuilt one)."""
    class_ids = resolve_classes(classes, model.names) if classes is not None else None
    built_in = model.nms.conf_thres
    if conf is not None and not 0 <= conf < 1:
        raise UsageError(f"--conf must be in [0, 1), got {conf:g}")
    if conf is not None and conf < built_in:
        where = "serve it instead" if served else "pass it with --model PATH"
        raise UsageError(
            f"--conf {conf:g} is below this model's built-in threshold {built_in:g}: detections under it are "
            f"dropped inside the model; rebuild it with 'python -m server_config.model build --conf {conf:g} "
            f"--out PATH' (or rewrap your export: 'python -m server_config.model wrap EXPORT --conf {conf:g} "
            f"--out PATH') and {where}")
    min_score = conf if conf is not None and conf > built_in else None
    return DetectionFilter(class_ids, min_score)


class FilteredSink:
    """A sink whose writers record only the detections ``keep`` keeps (every frame still recorded)."""

    def __init__(self, sink, keep: DetectionFilter) -> None:
        self.sink, self.keep = sink, keep

    def open(self, rel: str) -> PostProcessingWriter:
        keep = self.keep
        return PostProcessingWriter(self.sink.open(rel), lambda _t_s, detections: keep.apply(detections))

    def outputs(self, rel: str) -> list[Path]:
        return self.sink.outputs(rel)
