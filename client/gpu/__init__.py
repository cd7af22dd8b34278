"""The GPU path: NVDEC decoding, CUDA letterbox, GPU inference. Imported lazily, never at start-up.

``import PyNvVideoCodec`` raises RuntimeError (not ImportError) where the NVIDIA driver is
missing, and CuPy imports fine without a GPU but fails at the first allocation; so
:func:`probe` tries each for real and says in one line why the GPU path is not taken.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuProbe:
    ok: bool
    reason: str  # why not (or what was found)


def probe() -> GpuProbe:
    """Can this process decode with NVDEC and run CUDA kernels? Never raises."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return GpuProbe(False, "no CUDA device")
        cupy.zeros(1, dtype=cupy.uint8)  # the first allocation is where a missing driver shows
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except ImportError:
        return GpuProbe(False, "CuPy is not installed (pip install 'framestream[gpu]')")
    except Exception as e:  # CUDARuntimeError, CUDADriverError: no usable GPU
        return GpuProbe(False, f"CUDA is not usable ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    try:
        import PyNvVideoCodec  # noqa: F401
    except ImportError:
        return GpuProbe(False, "PyNvVideoCodec is not installed (pip install 'framestream[gpu]')")
    except RuntimeError as e:  # raised, not ImportError, where the driver is missing
        return GpuProbe(False, f"PyNvVideoCodec cannot load ({str(e).splitlines()[0][:120]})")
    return GpuProbe(True, f"{name}, NVDEC via PyNvVideoCodec")
