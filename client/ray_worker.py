"""A Ray node's worker: one long-lived actor per node, holding that node's backend and pipeline.

The driver (:mod:`client.ray_run`) hands it units of the single-machine plan (a whole file or
one key-frame segment) by path; the worker decodes and infers them on its node with the same
:class:`~client.pipeline.Pipeline` as one machine and returns each unit's detections. Decoded
frames never leave the node. A unit's result is all or nothing: the driver writes it only once
it has arrived whole, so a unit lost with its node runs again elsewhere and no frame is written
twice. Ray is not imported here; the driver wraps :class:`NodeWorker` in ``ray.remote``.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import backends
from .contract import ModelInfo
from .errors import FramestreamError
from .jobs import make_job, split_maps
from .options import BulkOptions
from .pipeline import BatchFailed, FileEnded, FileStarted, FrameResult, Pipeline
from .schedule import FilePlan, Segment

__all__ = ["Unit", "UnitResult", "NodeInfo", "NodeWorker"]


@dataclass(frozen=True)
class Unit:
    """One unit of work; ``uid`` (its place in the plan's longest-first order) stands for its
    file in the worker's pipeline, so two segments of one file on one node stay apart."""

    uid: int
    plan: FilePlan
    segment: Segment | None


@dataclass(frozen=True)
class UnitResult:
    uid: int
    events: tuple[FrameResult | FileEnded | BatchFailed, ...]  # their file_id is the unit's uid
    complete: bool  # False: the worker stopped (or its pipeline failed) before the unit ended
    fatal: str | None = None  # the node's backend is gone, or its pipeline failed: rerun elsewhere
    busy_s: float = 0.0  # the node backend's busy seconds so far (for the per-node report)


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    host: str
    pid: int
    error: str | None = None  # the backend could not start here (one line): the run is refused
    model: ModelInfo | None = None
    lanes: int = 0
    workers: int = 0  # decoders at once
    device: str = "cpu"
    gpu: str | None = None  # the GPU Ray gave this worker (CUDA_VISIBLE_DEVICES), on a GPU node


@dataclass
class _Pending:
    events: list = field(default_factory=list)
    counted: int = 0  # frames accounted for: results and failed frames
    ended: FileEnded | None = None
    fatal: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def complete(self) -> bool:
        return self.ended is not None and self.counted >= self.ended.frames


class NodeWorker:
    """Runs on one node: a backend set up as one machine sets it up (:mod:`client.backends`:
    embedded, or the node's own Triton at ``--server``), one pipeline that takes units as they come."""

    def __init__(self, options: BulkOptions, model_path: Path | None, node_id: str) -> None:
        self._node_id, self._stopped = node_id, False
        self._lock = threading.Lock()
        self._units: dict[int, _Pending] = {}
        self.backend = None
        try:
            self._start(options, model_path)
        except FramestreamError as e:  # said by info(): the driver refuses the run in one line
            self._error: str | None = str(e).splitlines()[0] if str(e) else type(e).__name__
        else:
            self._error = None

    def _start(self, options: BulkOptions, model_path: Path | None) -> None:
        from .jobs import gpu_letterbox

        self.gpu, _ = backends.use_gpu(options)
        local = backends.start_local(options, model_path, self.gpu)  # this node's GPU (Ray gave it one) and CPUs
        self.backend, self.config = local.backend, local.config
        self._letterbox = gpu_letterbox() if self.gpu else None
        self.pipeline = Pipeline(self.backend, self.config)
        self.pipeline.start([], more=True)
        self._router = threading.Thread(target=self._route, name="ray-router", daemon=True)
        self._router.start()

    def info(self) -> NodeInfo:
        base = NodeInfo(self._node_id, socket.gethostname(), os.getpid(), self._error)
        if self._error is not None:
            return base
        return replace(base, model=self.backend.model, lanes=self.backend.lanes, workers=self.config.workers,
                       device="gpu" if self.gpu else "cpu",
                       gpu=(os.environ.get("CUDA_VISIBLE_DEVICES") or None) if self.gpu else None)

    def run(self, unit: Unit) -> UnitResult:
        """Decode and infer one unit here; returns when all its frames have their results."""
        pending = _Pending()
        with self._lock:
            if self._stopped or self._error is not None:
                return UnitResult(unit.uid, (), False, self._error)
            self._units[unit.uid] = pending
        maps = split_maps(unit.plan) if unit.segment is not None else None
        job = make_job(unit.plan, unit.segment, self.config, maps, self._letterbox)
        self.pipeline.add_job(replace(job, file_id=unit.uid))
        pending.done.wait()
        with self._lock:
            self._units.pop(unit.uid, None)
        crash = self.pipeline.crash
        fatal = pending.fatal or (str(crash) if crash is not None and not self._stopped else None)
        return UnitResult(unit.uid, tuple(pending.events), pending.complete and fatal is None, fatal,
                          self.backend.busy_seconds())

    def _route(self) -> None:
        """The pipeline's events, sorted into their units; each unit is released when whole."""
        for event in self.pipeline.events():
            if isinstance(event, FileStarted):
                continue
            with self._lock:
                if isinstance(event, BatchFailed):
                    for uid, n in event.frames_by_file.items():
                        self._add(uid, BatchFailed({uid: n}, event.reason, event.fatal), n)
                else:
                    self._add(event.file_id, event, 1 if isinstance(event, FrameResult) else 0)
        with self._lock:  # stopped, or a stage failed: what is left is incomplete
            self._stopped = True
            for pending in self._units.values():
                pending.done.set()

    def _add(self, uid: int, event, frames: int) -> None:
        pending = self._units.get(uid)
        if pending is None:
            return
        pending.events.append(event)
        pending.counted += frames
        if isinstance(event, FileEnded):
            pending.ended = event
        if isinstance(event, BatchFailed) and event.fatal:
            pending.fatal = event.reason
        if pending.complete or pending.fatal:
            pending.done.set()

    def stop(self) -> None:
        """The run is stopping: lanes finish the batches they hold, then every unit returns
        what it has (incomplete)."""
        with self._lock:
            self._stopped = True
        if self.backend is not None and self._error is None:
            self.pipeline.stop()

    def busy_seconds(self) -> float:
        return self.backend.busy_seconds() if self.backend is not None else 0.0

    def close(self) -> None:
        if self.backend is None:
            return
        if self._error is None:
            self.pipeline.end_jobs()
            self.pipeline.close()
        self.backend.close()
