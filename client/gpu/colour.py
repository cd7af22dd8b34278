"""YUV to RGB: which matrix and range a stream uses, and the NumPy reference conversion.

The choice follows FFmpeg's swscale (the CPU path), so both paths agree: BT.709 when the
stream says so, BT.601 otherwise (also when it says nothing), limited range unless the
stream says full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# FFmpeg's AVColorSpace and AVColorRange values, as PyAV reports them.
AVCOL_SPC_BT709 = 1
AVCOL_RANGE_JPEG = 2


@dataclass(frozen=True)
class Colour:
    """R = Y' + rv*V; G = Y' + gu*U + gv*V; B = Y' + bu*U, with Y' = (Y - y_offset) * y_scale,
    U, V = (Cb/Cr - 128) * c_scale."""

    name: str
    rv: float
    gu: float
    gv: float
    bu: float
    y_offset: float
    y_scale: float
    c_scale: float

    def as_kernel_args(self) -> tuple[float, ...]:
        return (self.rv, self.gu, self.gv, self.bu, self.y_offset, self.y_scale, self.c_scale)


def _matrix(kr: float, kb: float) -> tuple[float, float, float, float]:
    kg = 1 - kr - kb
    return 2 * (1 - kr), -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg, 2 * (1 - kb)


_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def select_colour(colorspace: int | None, color_range: int | None) -> Colour:
    """The conversion for a stream's declared colour space and range (see the module doc)."""
    matrix = "bt709" if colorspace == AVCOL_SPC_BT709 else "bt601"
    full = color_range == AVCOL_RANGE_JPEG
    rv, gu, gv, bu = _matrix(*_KR_KB[matrix])
    if full:
        return Colour(f"{matrix}-full", rv, gu, gv, bu, 0.0, 1.0, 1.0)
    return Colour(f"{matrix}-limited", rv, gu, gv, bu, 16.0, 255 / 219, 255 / 224)


def nv12_to_rgb_reference(nv12: np.ndarray, width: int, height: int, colour: Colour) -> np.ndarray:
    """NV12 (Y plane over interleaved UV, ``height * 3 // 2`` rows) to RGB uint8 [H, W, 3].

    Chroma is taken from the sample covering each 2x2 block (nearest), each pixel is
    rounded and clamped: the exact per-pixel rule the CUDA kernel applies before blending.
    """
    y = nv12[:height, :width].astype(np.float32)
    uv = nv12[height : height + height // 2, : width // 2 * 2].reshape(height // 2, width // 2, 2)
    uv = uv.repeat(2, axis=0).repeat(2, axis=1)[:height, :width].astype(np.float32)
    yp = (y - np.float32(colour.y_offset)) * np.float32(colour.y_scale)
    u = (uv[..., 0] - np.float32(128)) * np.float32(colour.c_scale)
    v = (uv[..., 1] - np.float32(128)) * np.float32(colour.c_scale)
    r = yp + np.float32(colour.rv) * v
    g = yp + np.float32(colour.gu) * u + np.float32(colour.gv) * v
    b = yp + np.float32(colour.bu) * u
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def yuv420p_to_nv12(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Planar 4:2:0 (as PyAV gives it) to NV12, for comparing with NVDEC's output."""
    h, w = y.shape
    uv = np.stack([u, v], axis=-1).reshape(h // 2, w)
    return np.concatenate([y, uv], axis=0)
