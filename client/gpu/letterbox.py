"""Letterbox on the GPU: NVDEC's NV12 surface to RGB uint8, written into a batch slot.

One thread per output pixel: inside the picture it converts the four bilinear neighbours
from YUV (each rounded and clamped, as :func:`client.colour.nv12_to_rgb_reference`
does), blends them with half-pixel-centre weights (as :func:`client.letterbox.
resize_bilinear_reference`) and rounds; outside it writes the pad grey. The NumPy
reference, applied to the same NV12 bytes, is the spec this kernel is tested against.

:class:`Nv12Picture` defers the launch until the pipeline hands it a slot of the batch
buffer, so the kernel writes straight into the memory inference reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arrays import copy_into, on_host
from ..colour import Colour
from ..contract import PAD_VALUE
from ..letterbox import LetterboxPlan
from .streams import DeviceOps, Lanes, Ready, cupy_ops

BLOCK = (32, 8)  # 256 threads; x (width) first, so a warp writes 32 consecutive pixels

KERNEL_NAME = "letterbox_nv12"

# Plain C but for CUDA's thread indices: tests/kernel_on_cpu.py compiles this same string
# with g++ and checks it against the NumPy reference where there is no GPU.
SOURCE = r"""
extern "C" __global__ void letterbox_nv12(
    const unsigned char* __restrict__ luma, long long luma_pitch,
    const unsigned char* __restrict__ chroma, long long chroma_pitch, int chroma_h,
    int src_w, int src_h, unsigned char* __restrict__ out, int out_w, int out_h,
    int top, int left, int resized_w, int resized_h, int turns,
    float rv, float gu, float gv, float bu, float y_offset, float y_scale, float c_scale, int pad)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    unsigned char* o = out + ((long long)y * out_w + x) * 3;
    int rx = x - left, ry = y - top;
    if (rx < 0 || ry < 0 || rx >= resized_w || ry >= resized_h) {
        o[0] = o[1] = o[2] = (unsigned char)pad;
        return;
    }
    /* Sample in display space (the coded frame turned counterclockwise `turns` quarter turns,
       as np.rot90), then fetch each neighbour from the coded surface. */
    int disp_w = (turns & 1) ? src_h : src_w, disp_h = (turns & 1) ? src_w : src_h;
    float sx = ((float)rx + 0.5f) * ((float)disp_w / (float)resized_w) - 0.5f;
    float sy = ((float)ry + 0.5f) * ((float)disp_h / (float)resized_h) - 0.5f;
    sx = fminf(fmaxf(sx, 0.0f), (float)(disp_w - 1));
    sy = fminf(fmaxf(sy, 0.0f), (float)(disp_h - 1));
    int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
    int x1 = min(x0 + 1, disp_w - 1), y1 = min(y0 + 1, disp_h - 1);
    float fx = sx - (float)x0, fy = sy - (float)y0;
    int xs[2] = {x0, x1}, ys[2] = {y0, y1};
    float row[2][3];
    for (int j = 0; j < 2; ++j) {
        float px[2][3];
        for (int i = 0; i < 2; ++i) {
            int dx = xs[i], dy = ys[j], cx, cy;
            switch (turns & 3) {
                case 1: cx = src_w - 1 - dy; cy = dx; break;
                case 2: cx = src_w - 1 - dx; cy = src_h - 1 - dy; break;
                case 3: cx = dy; cy = src_h - 1 - dx; break;
                default: cx = dx; cy = dy;
            }
            float Y = ((float)luma[cy * luma_pitch + cx] - y_offset) * y_scale;
            /* Odd heights: the last luma row's chroma row may be cut off the surface's view. */
            const unsigned char* c = chroma + min(cy >> 1, chroma_h - 1) * chroma_pitch + (cx >> 1) * 2;
            float U = ((float)c[0] - 128.0f) * c_scale;
            float V = ((float)c[1] - 128.0f) * c_scale;
            px[i][0] = fminf(fmaxf(rintf(Y + rv * V), 0.0f), 255.0f);
            px[i][1] = fminf(fmaxf(rintf(Y + gu * U + gv * V), 0.0f), 255.0f);
            px[i][2] = fminf(fmaxf(rintf(Y + bu * U), 0.0f), 255.0f);
        }
        for (int k = 0; k < 3; ++k) row[j][k] = px[0][k] * (1.0f - fx) + px[1][k] * fx;
    }
    for (int k = 0; k < 3; ++k) {
        float v = row[0][k] * (1.0f - fy) + row[1][k] * fy;
        o[k] = (unsigned char)fminf(fmaxf(rintf(v), 0.0f), 255.0f);
    }
}
"""


@dataclass(frozen=True)
class Launch:
    grid: tuple[int, int]
    block: tuple[int, int]


def launch_geometry(out_hw: tuple[int, int], block: tuple[int, int] = BLOCK) -> Launch:
    """Enough blocks to cover every output pixel once (the kernel returns past the edges)."""
    h, w = out_hw
    if h <= 0 or w <= 0:
        raise ValueError(f"output must be non-empty, got {w}x{h}")
    return Launch(grid=(-(-w // block[0]), -(-h // block[1])), block=block)


class GpuLetterbox:
    """Compiles the kernel once; :meth:`__call__` letterboxes one NV12 surface into ``out``."""

    def __init__(self) -> None:
        import cupy

        self._cp = cupy
        self._kernel = cupy.RawKernel(SOURCE, KERNEL_NAME)

    def __call__(self, luma, chroma, plan: LetterboxPlan, colour: Colour, out=None, turns: int = 0):
        """``luma`` [Hs, W] and ``chroma`` [Hs/2, W] uint8 CuPy views (pitched is fine); ``out``
        a C-contiguous [H, W, 3] uint8 CuPy array (e.g. a slot of a batch buffer); ``turns``
        counterclockwise quarter turns from the coded frame to ``plan.src_hw`` (display). The
        launch is asynchronous on the current stream; whoever reads ``out`` synchronizes first."""
        cp = self._cp
        if out is None:
            out = cp.empty((*plan.dst_hw, 3), dtype=cp.uint8)
        if on_host(out) or out.shape != (*plan.dst_hw, 3) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous {plan.dst_hw + (3,)} device array, got {type(out).__name__} "
                             f"{out.shape}")
        launch = launch_geometry(plan.dst_hw)
        args = kernel_args(luma, chroma, out, plan, colour, turns, i32=cp.int32, i64=cp.int64, f32=cp.float32)
        self._kernel(launch.grid, launch.block, args)
        return out


def kernel_args(luma, chroma, out, plan: LetterboxPlan, colour: Colour, turns: int, *, i32, i64, f32) -> tuple:
    """The kernel's arguments in order. The number types are the caller's (CuPy's on a GPU,
    Python's for the CPU build in the tests), so both launch exactly the same arguments."""
    src_h, src_w = plan.src_hw[::-1] if turns % 2 else plan.src_hw  # the coded surface
    return (
        luma, i64(luma.strides[0]), chroma, i64(chroma.strides[0]), i32(chroma.shape[0]),
        i32(src_w), i32(src_h), out, i32(plan.dst_hw[1]), i32(plan.dst_hw[0]),
        i32(plan.top), i32(plan.left), i32(plan.resized_hw[1]), i32(plan.resized_hw[0]),
        i32(turns % 4), *(f32(v) for v in colour.as_kernel_args()), i32(PAD_VALUE),
    )


def nv12_planes(nv12):
    """Luma and chroma views of an NV12 surface (its height may be padded, e.g. 1088 for 1080).

    ``rows`` = luma rows + chroma rows. For an odd luma height H (VP9 and AV1 allow it) a
    decoder writes ceil(H/2) chroma rows (rows = 3k+2 for H = 2k+1), but a view sized as
    floor(1.5 H) has one fewer (3k+1): both give H = round(2 rows / 3), where the floor
    (rows * 2 // 3) is one row short for the second and shifts the whole chroma plane. The
    kernel clamps chroma rows to what the view holds."""
    surface_h = luma_rows(nv12.shape[0])
    return nv12[:surface_h], nv12[surface_h:]


def luma_rows(rows: int) -> int:
    """The luma height of an NV12 surface of ``rows`` rows (see :func:`nv12_planes`)."""
    return (2 * rows + 1) // 3


@dataclass(frozen=True)
class Nv12Picture:
    """A decoded NV12 surface (our own copy, the decoder reuses its surfaces) that the kernel
    letterboxes when the pipeline knows its batch slot: straight into the batch buffer.

    The copy was made on the decoder's stream in another thread; the kernel runs on the
    calling thread's current stream (a lane's, see :mod:`client.gpu.streams`) after waiting
    for the copy's event."""

    nv12: Ready  # CuPy uint8 [rows, width] (luma over interleaved chroma), and when it is whole
    plan: LetterboxPlan
    colour: Colour
    kernel: GpuLetterbox
    turns: int = 0  # display rotation, counterclockwise quarter turns
    ops: DeviceOps = field(default_factory=cupy_ops)

    def write_into(self, out) -> None:
        if on_host(out):  # a host batch (system shared memory): letterbox, then one download
            copy_into(out, self.array())
        else:
            Lanes.wait(self.nv12, self.ops)
            self.kernel(*nv12_planes(self.nv12.array), self.plan, self.colour, out, self.turns)

    def array(self):
        Lanes.wait(self.nv12, self.ops)
        return self.kernel(*nv12_planes(self.nv12.array), self.plan, self.colour, turns=self.turns)
