"""The GPU path: NVDEC decoding, CUDA letterbox, GPU inference. Imported lazily, never at start-up.

``import PyNvVideoCodec`` raises RuntimeError (not ImportError) where the NVIDIA driver is
missing, and CuPy imports fine without a GPU but fails at the first allocation; so
:func:`probe` tries each for real and says in one line why the GPU path is not taken.
"""

from __future__ import annotations

from dataclasses import dataclass

PYNVVIDEOCODEC_MAJOR = 2  # the frames' getPTS() (1.x has none); pyproject's gpu extra pins >=2.0,<3


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
        import PyNvVideoCodec
    except ImportError:
        return GpuProbe(False, "PyNvVideoCodec is not installed (pip install 'framestream[gpu]')")
    except RuntimeError as e:  # raised, not ImportError, where the driver is missing
        return GpuProbe(False, f"PyNvVideoCodec cannot load ({str(e).splitlines()[0][:120]})")
    version = getattr(PyNvVideoCodec, "__version__", "unknown")
    refusal = pynvvideocodec_refusal(version)
    if refusal:
        return GpuProbe(False, refusal)
    return GpuProbe(True, f"{name}, NVDEC via PyNvVideoCodec {version}")


def pynvvideocodec_refusal(version: str) -> str | None:
    """Why this PyNvVideoCodec cannot decode for us, or None. An environment installed by
    hand can hold a 1.x, whose frames have no getPTS(): every NVDEC job would fail."""
    major = version.split(".")[0]
    if major.isdigit() and int(major) == PYNVVIDEOCODEC_MAJOR:
        return None
    return (f"PyNvVideoCodec {version} is not a {PYNVVIDEOCODEC_MAJOR}.x release "
            f"(pip install 'pynvvideocodec>={PYNVVIDEOCODEC_MAJOR}.0,<{PYNVVIDEOCODEC_MAJOR + 1}')")
