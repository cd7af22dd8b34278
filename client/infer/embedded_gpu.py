"""In-process inference on the GPU: onnxruntime-gpu, CUDA execution provider, I/O binding.

Each lane's batch buffer is device memory that the letterbox kernel fills and the session
reads through I/O binding by its pointer, so frames never cross to the host; only the few
KB of detections come back. A host batch, if handed one, is passed as usual.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..contract import DETECTIONS, INPUT, NUM_DETECTIONS
from ..errors import ModelError, UsageError
from . import BatchOutput
from .buffers import LaneBuffers, device
from .embedded import read_model_info


class EmbeddedGpuBackend:
    def __init__(self, model_path: Path, *, sessions: int = 2, device_id: int = 0) -> None:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UsageError("the GPU embedded backend needs onnxruntime-gpu: pip install 'framestream[gpu]'")
        self.lanes = sessions
        self.device_id = device_id
        providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        try:
            self._sessions = [ort.InferenceSession(str(model_path), providers=providers) for _ in range(sessions)]
        except Exception as e:  # onnxruntime's own error types
            raise ModelError(f"{model_path}: onnxruntime-gpu cannot load it ({str(e).splitlines()[0][:160]})") from e
        self.model = read_model_info(self._sessions[0], model_path)
        self._buffers = LaneBuffers(self.lanes, device)
        self._busy = 0.0
        self._lock = threading.Lock()

    def batch_buffer(self, lane: int, shape: tuple[int, int, int, int]):
        return self._buffers.view(lane, shape)

    def infer(self, lane: int, batch) -> BatchOutput:
        session = self._sessions[lane]
        start = time.perf_counter()
        if isinstance(batch, np.ndarray):
            det, num = session.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: batch})
        else:
            import cupy as cp

            batch = cp.ascontiguousarray(batch)
            cp.cuda.get_current_stream().synchronize()  # the letterbox kernels are done
            binding = session.io_binding()
            binding.bind_input(INPUT.name, "cuda", self.device_id, INPUT.numpy_dtype, list(batch.shape),
                               batch.data.ptr)
            binding.bind_output(DETECTIONS.name, "cpu")
            binding.bind_output(NUM_DETECTIONS.name, "cpu")
            session.run_with_iobinding(binding)
            det, num = binding.copy_outputs_to_cpu()
        with self._lock:
            self._busy += time.perf_counter() - start
        return BatchOutput(det, num)

    def abort(self) -> None:
        """Nothing waits here: a batch in onnxruntime finishes in its own time."""

    def busy_seconds(self) -> float:
        return self._busy

    def close(self) -> None:
        self._sessions.clear()
