"""In-process inference with onnxruntime: one session per lane, each with few threads.

On CPU, two 1-thread sessions beat one 2-thread session (about 1.25x measured here), and
ORT releases the GIL while it runs, so lanes are plain threads.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from .. import defaults
from ..contract import DETECTIONS, INPUT, NUM_DETECTIONS, ModelInfo, model_digest
from ..errors import ContractMismatchError, FramestreamError, ModelError, UsageError
from ..threads import cpu_sessions
from . import BatchOutput
from .buffers import LaneBuffers, host
from .busy import BusyClock

log = logging.getLogger(__name__)


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as e:  # the base install brings none: cpu and gpu extras each bring one
        raise UsageError("the embedded backend needs onnxruntime: pip install 'framestream[cpu]' "
                         "(or 'framestream[gpu]' with CUDA, not both)") from e
    return ort


class OrtBackend:
    """What the in-process backends share: one onnxruntime session per lane (ORT releases the
    GIL while it runs, so lanes are plain threads), a batch buffer per lane in the memory the
    sessions read, and the busy clock. Subclasses open the sessions and may bind inputs."""

    def __init__(self, model_path: Path, open_session: Callable[[bytes], object], *, lanes: int,
                 memory: Callable[[int], object], runtime: str) -> None:
        self.lanes = lanes
        try:  # read once: every session, and the digest that names the results, come from these bytes
            model = model_path.read_bytes()
        except OSError as e:
            raise ModelError(f"{model_path}: cannot read it ({e.strerror or e})") from e
        try:
            self._sessions = [open_session(model) for _ in range(lanes)]
        except FramestreamError:  # the opener's own verdict (e.g. the CUDA provider fell back): as it said
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise ModelError(f"{model_path}: {runtime} cannot load it ({str(e).splitlines()[0][:160]})") from e
        self.model = replace(read_model_info(self._sessions[0], model_path), digest=model_digest(model))
        self._buffers = LaneBuffers(lanes, memory)
        self._clock = BusyClock()

    def batch_buffer(self, lane: int, shape: tuple[int, int, int, int]):
        return self._buffers.view(lane, shape)

    def infer(self, lane: int, batch) -> BatchOutput:
        with self._clock.measure(len(batch)):
            det, num = self._run(self._sessions[lane], batch)
        return BatchOutput(det, num)

    def _run(self, session, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return session.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: batch})

    def abort(self) -> None:
        """Nothing waits here: a batch in onnxruntime finishes in its own time."""

    def busy_seconds(self) -> float:
        return self._clock.seconds

    def close(self) -> None:
        self._sessions.clear()


class EmbeddedBackend(OrtBackend):
    def __init__(self, model_path: Path, *, sessions: int | None = None,
                 threads_per_session: int = defaults.THREADS_PER_SESSION) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads_per_session
        options.inter_op_num_threads = 1
        # Batches formed across files end partly filled at any size 1..batch; ORT's memory
        # pattern is planned per input shape and kept, so with it RSS grows with every new
        # size (measured: 160 -> 459 MiB over 40 files). Without it RSS stays flat.
        options.enable_mem_pattern = False

        def open_session(model: bytes):
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        super().__init__(model_path, open_session, lanes=sessions or cpu_sessions(), memory=host,
                         runtime="onnxruntime")


def read_model_info(session, model_path: Path) -> ModelInfo:
    """Check the session against the contract and read what the client needs from its metadata
    (``model_path`` names the model in messages; the caller adds the digest)."""
    inputs = session.get_inputs()
    outputs = {o.name: o for o in session.get_outputs()}
    if [i.name for i in inputs] != [INPUT.name] or inputs[0].type != "tensor(uint8)":
        raise ContractMismatchError(
            f"{model_path}: input must be {INPUT.name!r} uint8, found "
            f"{[(i.name, i.type) for i in inputs]}; wrap exports with 'python -m server_config.model wrap'"
        )
    missing = {DETECTIONS.name, NUM_DETECTIONS.name} - set(outputs)
    if missing:
        raise ContractMismatchError(f"{model_path}: missing outputs {sorted(missing)}")
    meta = session.get_modelmeta().custom_metadata_map
    try:
        info = ModelInfo.from_metadata(meta, input_shape=tuple(inputs[0].shape))
    except (KeyError, ValueError) as e:
        raise ModelError(f"{model_path}: model metadata lacks framestream's keys ({e})") from e
    return info
