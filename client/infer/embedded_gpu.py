"""In-process inference on the GPU: onnxruntime-gpu, CUDA execution provider, I/O binding.

Each lane's batch buffer is device memory that the letterbox kernel fills and the session
reads through I/O binding by its pointer, so frames never cross to the host; only the few
KB of detections come back. A host batch, if handed one, is passed as usual. Each lane fills
its buffer on a stream of its own and synchronizes it before onnxruntime, which runs on its
own stream, reads the buffer (:mod:`client.gpu.streams`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import defaults
from ..contract import DETECTIONS, INPUT, NUM_DETECTIONS
from ..errors import UsageError
from ..gpu.streams import Lanes
from .buffers import device
from . import BatchOutput
from .embedded import OrtBackend, import_onnxruntime


class EmbeddedGpuBackend(OrtBackend):
    def __init__(self, model_path: Path, *, sessions: int = defaults.GPU_SESSIONS, device_id: int = 0) -> None:
        ort = import_onnxruntime()
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UsageError("the GPU embedded backend needs onnxruntime-gpu: pip install 'framestream[gpu]'")
        self.device_id = device_id

        def open_session(model: bytes):
            return open_cuda_session(ort, model, device_id)

        super().__init__(model_path, open_session, lanes=sessions, memory=device, runtime="onnxruntime-gpu")
        self._lanes = Lanes(sessions, device_id)

    def batch_buffer(self, lane: int, shape: tuple[int, int, int, int]):
        self._lanes.enter(lane)  # the buffer, the letterbox kernels and their waits on this lane's stream
        return super().batch_buffer(lane, shape)

    def infer(self, lane: int, batch) -> BatchOutput:
        if not isinstance(batch, np.ndarray):
            self._lanes.enter(lane)
            self._lanes.finish(lane)  # the letterbox kernels are done before onnxruntime reads
        return super().infer(lane, batch)

    def _run(self, session, batch) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(batch, np.ndarray):
            return super()._run(session, batch)
        import cupy as cp

        if not batch.flags.c_contiguous:
            batch = cp.ascontiguousarray(batch)
            cp.cuda.get_current_stream().synchronize()  # the lane's stream: the copy is done
        binding = session.io_binding()
        binding.bind_input(INPUT.name, "cuda", self.device_id, INPUT.numpy_dtype, list(batch.shape), batch.data.ptr)
        binding.bind_output(DETECTIONS.name, "cpu")
        binding.bind_output(NUM_DETECTIONS.name, "cpu")
        session.run_with_iobinding(binding)
        det, num = binding.copy_outputs_to_cpu()
        return det, num


def open_cuda_session(ort, model: bytes | Path, device_id: int):
    """An onnxruntime session that really runs on CUDA. Where the CUDA provider cannot start
    (no cuDNN in a CUDA runtime image, a driver too old) onnxruntime logs a warning and runs
    the session on CPU instead, which would feed device pointers to a CPU session: the
    providers the session actually took are checked, and a fallback fails here in one line."""
    providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    session = ort.InferenceSession(str(model) if isinstance(model, Path) else model, providers=providers)
    taken = session.get_providers()
    if "CUDAExecutionProvider" not in taken:
        raise UsageError(f"onnxruntime's CUDA provider did not start on GPU {device_id} and the session fell back to "
                         f"{', '.join(taken)} (onnxruntime's warning above says why, often a missing cuDNN or CUDA "
                         "library); install what it names, or run with --device cpu")
    return session
