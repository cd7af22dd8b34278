"""Is an exception the GPU's fault or the data's? The answer decides between failing one file
and stopping the run.

A CUDA out-of-memory, a driver error or a lost device fails every later file the same way,
so calling it damage to the file would fail file after file as "damaged" while the run goes
on. Pure (no CUDA import), so the rules are tested on CPU with the libraries' real
exception names and messages.
"""

from __future__ import annotations

import re

__all__ = ["device_fault"]

# Where CuPy's CUDA errors live (CUDARuntimeError, CUDADriverError, OutOfMemoryError, ...).
_CUDA_MODULES = ("cupy", "cupy_backends")
# What CUDA, NVDEC (NvDecoder's CUresult names), onnxruntime's CUDA provider and cuDNN put in
# their messages when the device, not the input, failed.
_MARKERS = ("out of memory", "out_of_memory", "cuda_error", "cudaerror", "cuda error", "cuda failure",
            "cudnn failure", "cublas failure", "cuinit", "driver", "illegal memory access", "illegal address",
            "ecc error", "launch failure", "device-side assert", "gpu is lost", "fallen off the bus")
# NVDEC's API calls report a bare CUresult ("cuvidDecodePicture(...) returned error 700"); these
# are the device's: out of memory, not initialised or deinitialised, device unavailable, no or
# invalid device, invalid context, ECC uncorrectable, illegal address, launch out of resources,
# launch timeout, launch failed, unknown.
_CURESULT = re.compile(r"returned error (\d+)")
_DEVICE_CURESULTS = frozenset({2, 3, 4, 46, 100, 101, 201, 214, 700, 701, 702, 719, 999})


def device_fault(error: BaseException) -> str | None:
    """Why ``error`` is a fault of the GPU (memory, CUDA, the driver) rather than of the video
    it was working on, or None. A MemoryError counts: CuPy's OutOfMemoryError is one."""
    if isinstance(error, MemoryError):
        return f"out of memory ({type(error).__name__})"
    if any(cls.__module__.split(".")[0] in _CUDA_MODULES for cls in type(error).__mro__):
        return f"CUDA error ({type(error).__name__})"
    text = str(error).lower()
    code = _CURESULT.search(text)
    if code is not None and int(code.group(1)) in _DEVICE_CURESULTS:
        return f"CUDA error {code.group(1)}"
    for marker in _MARKERS:
        if marker in text:
            return "out of memory" if marker.startswith("out") else "CUDA or driver error"
    return None
