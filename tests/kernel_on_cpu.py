"""Runs the CUDA letterbox kernel's source on the CPU, so CI checks its arithmetic without a GPU.

The kernel is plain C apart from CUDA's thread indices; a small shim defines them, loops over
every block and thread of the launch geometry the GPU would use, and g++ compiles the very
source string that CuPy compiles on a GPU. It proves the indexing, the colour conversion, the
blending, the padding and the slot addressing; not the GPU's scheduling or memory model (the
``gpu`` tests do that on a real device).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from client.colour import Colour
from client.gpu.letterbox import KERNEL_NAME, SOURCE, kernel_args, launch_geometry, nv12_planes
from client.letterbox import LetterboxPlan

_SHIM = r"""
#include <math.h>
#include <algorithm>
using std::min; using std::max;
#define __global__
struct fs_dim3 { int x, y, z; };
static fs_dim3 blockIdx, blockDim, threadIdx;
"""

_LAUNCHER = r"""
extern "C" void launch(int gx, int gy, int bx, int by, const unsigned char* luma, long long luma_pitch,
    const unsigned char* chroma, long long chroma_pitch, int chroma_h, int src_w, int src_h, unsigned char* out,
    int out_w, int out_h, int top, int left, int resized_w, int resized_h, int turns,
    float rv, float gu, float gv, float bu, float y_offset, float y_scale, float c_scale, int pad)
{
    blockDim.x = bx; blockDim.y = by; blockDim.z = 1;
    for (blockIdx.y = 0; blockIdx.y < gy; ++blockIdx.y)
    for (blockIdx.x = 0; blockIdx.x < gx; ++blockIdx.x)
    for (threadIdx.y = 0; threadIdx.y < by; ++threadIdx.y)
    for (threadIdx.x = 0; threadIdx.x < bx; ++threadIdx.x)
        KERNEL(luma, luma_pitch, chroma, chroma_pitch, chroma_h, src_w, src_h, out, out_w, out_h, top, left,
               resized_w, resized_h, turns, rv, gu, gv, bu, y_offset, y_scale, c_scale, pad);
}
"""


def compiler() -> str | None:
    return shutil.which("g++")


def build(workdir: Path) -> ctypes.CDLL:
    """Compile the kernel source with the shim (cached by the source's hash)."""
    code = _SHIM + SOURCE + _LAUNCHER.replace("KERNEL", KERNEL_NAME)
    lib = workdir / f"letterbox_{hashlib.sha256(code.encode()).hexdigest()[:12]}.so"
    if not lib.exists():
        src = lib.with_suffix(".cpp")
        src.write_text(code)
        # -ffp-contract=off: no fused multiply-adds, plain IEEE float like the NumPy reference.
        subprocess.run([compiler() or "g++", "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(lib), str(src)],
                       check=True, capture_output=True)
    dll = ctypes.CDLL(str(lib))
    p, ll, i, f = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float
    dll.launch.argtypes = [i, i, i, i, p, ll, p, ll, i, i, i, p, i, i, i, i, i, i, i, f, f, f, f, f, f, f, i]
    dll.launch.restype = None
    return dll


def letterbox(dll: ctypes.CDLL, nv12: np.ndarray, plan: LetterboxPlan, colour: Colour, out: np.ndarray,
              turns: int = 0) -> np.ndarray:
    """What ``GpuLetterbox.__call__`` launches, on the CPU: NV12 ``nv12`` into ``out`` (a slot),
    with the arguments from the same :func:`kernel_args`."""
    assert out.flags.c_contiguous and out.shape == (*plan.dst_hw, 3) and out.dtype == np.uint8
    luma, chroma = nv12_planes(np.ascontiguousarray(nv12))
    args = kernel_args(luma, chroma, out, plan, colour, turns, i32=int, i64=int, f32=float)
    launch = launch_geometry(plan.dst_hw)
    dll.launch(*launch.grid, *launch.block, *(a.ctypes.data if isinstance(a, np.ndarray) else a for a in args))
    return out
