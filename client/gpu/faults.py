"""Is an exception the GPU's fault or the data's? The answer decides between failing one file
and stopping the run.

A CUDA out-of-memory, a driver error or a lost device fails every later file the same way,
so calling it damage to the file would fail file after file as "damaged" while the run goes
on. Pure (no CUDA import), so the rules are tested on CPU with the libraries' real
exception names and messages.
"""

from __future__ import annotations

__all__ = ["device_fault"]

# Where CuPy's CUDA errors live (CUDARuntimeError, CUDADriverError, OutOfMemoryError, ...).
_CUDA_MODULES = ("cupy", "cupy_backends")
# What CUDA, NVDEC (NvDecoder's CUresult names), onnxruntime's CUDA provider and cuDNN put in
# their messages when the device, not the input, failed.
_MARKERS = ("out of memory", "cuda_error", "cudaerror", "cuda error", "cuda failure", "cudnn failure",
            "cublas failure", "cuinit", "driver", "illegal memory access", "illegal address", "ecc error",
            "launch failure", "device-side assert", "gpu is lost", "fallen off the bus")


def device_fault(error: BaseException) -> str | None:
    """Why ``error`` is a fault of the GPU (memory, CUDA, the driver) rather than of the video
    it was working on, or None. A MemoryError counts: CuPy's OutOfMemoryError is one."""
    if isinstance(error, MemoryError):
        return f"out of memory ({type(error).__name__})"
    if any(cls.__module__.split(".")[0] in _CUDA_MODULES for cls in type(error).__mro__):
        return f"CUDA error ({type(error).__name__})"
    text = str(error).lower()
    for marker in _MARKERS:
        if marker in text:
            return "out of memory" if marker == "out of memory" else "CUDA or driver error"
    return None
