"""YUV to RGB: which matrix and range a stream uses, and the NumPy reference conversion.

Both paths convert with these coefficients (the CPU path with OpenCV, the GPU path in its
CUDA kernel), so they agree to rounding. The choice follows FFmpeg's defaults: BT.709 when
the stream says so, BT.601 otherwise (also when it says nothing), limited range unless
the stream says full (or its pixel format is a full-range ``yuvj`` one).
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

    def affine(self) -> np.ndarray:
        """The conversion as one 3x4 matrix M, [R, G, B] = M @ [Y, Cb, Cr, 1] (float32, for
        OpenCV's ``transform``)."""
        ys, cs = self.y_scale, self.c_scale
        m = np.array([[ys, 0.0, self.rv * cs], [ys, self.gu * cs, self.gv * cs], [ys, self.bu * cs, 0.0]])
        offset = -m @ np.array([self.y_offset, 128.0, 128.0])
        return np.hstack([m, offset[:, None]]).astype(np.float32)

    @property
    def is_opencv_default(self) -> bool:
        """OpenCV's I420 conversion is BT.601 limited range (and its fastest)."""
        return self.name == "bt601-limited"


def _matrix(kr: float, kb: float) -> tuple[float, float, float, float]:
    kg = 1 - kr - kb
    return 2 * (1 - kr), -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg, 2 * (1 - kb)


_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


def select_colour(colorspace: int | None, color_range: int | None, pix_fmt: str | None = None) -> Colour:
    """The conversion for a stream's declared colour space and range (see the module doc)."""
    matrix = "bt709" if colorspace == AVCOL_SPC_BT709 else "bt601"
    full = color_range == AVCOL_RANGE_JPEG or (pix_fmt or "").startswith("yuvj")
    rv, gu, gv, bu = _matrix(*_KR_KB[matrix])
    if full:
        return Colour(f"{matrix}-full", rv, gu, gv, bu, 0.0, 1.0, 1.0)
    return Colour(f"{matrix}-limited", rv, gu, gv, bu, 16.0, 255 / 219, 255 / 224)


def stream_colour(codec_context) -> Colour:
    """:func:`select_colour` for a PyAV codec context (after its first frame is decoded)."""
    cc = codec_context
    return select_colour(int(cc.colorspace or 0), int(cc.color_range or 0), cc.pix_fmt)


def yuv420_to_rgb_reference(y: np.ndarray, u: np.ndarray, v: np.ndarray, colour: Colour) -> np.ndarray:
    """Planar 8-bit 4:2:0 to RGB uint8 [H, W, 3]; chroma planes are ceil(H/2) x ceil(W/2).

    Chroma is taken from the sample covering each 2x2 block (nearest), each pixel is
    rounded and clamped: the exact per-pixel rule the CUDA kernel applies before blending.
    """
    h, w = y.shape

    def full(c: np.ndarray) -> np.ndarray:
        return c.repeat(2, axis=0).repeat(2, axis=1)[:h, :w].astype(np.float32)

    yp = (y.astype(np.float32) - np.float32(colour.y_offset)) * np.float32(colour.y_scale)
    cb = (full(u) - np.float32(128)) * np.float32(colour.c_scale)
    cr = (full(v) - np.float32(128)) * np.float32(colour.c_scale)
    r = yp + np.float32(colour.rv) * cr
    g = yp + np.float32(colour.gu) * cb + np.float32(colour.gv) * cr
    b = yp + np.float32(colour.bu) * cb
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def nv12_to_rgb_reference(nv12: np.ndarray, width: int, height: int, colour: Colour) -> np.ndarray:
    """NV12 (Y plane over interleaved UV; even sizes, as NVDEC gives) to RGB uint8 [H, W, 3]
    with :func:`yuv420_to_rgb_reference`. The surface may have padding rows below the
    picture (1088 for 1080): the chroma plane starts at 2/3 of its rows."""
    surface_h = nv12.shape[0] * 2 // 3
    uv = nv12[surface_h : surface_h + height // 2, : width // 2 * 2].reshape(height // 2, width // 2, 2)
    return yuv420_to_rgb_reference(nv12[:height, :width], uv[..., 0], uv[..., 1], colour)


def yuv420p_to_nv12(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Planar 4:2:0 (as PyAV gives it) to NV12, for comparing with NVDEC's output."""
    h, w = y.shape
    uv = np.stack([u, v], axis=-1).reshape(h // 2, w)
    return np.concatenate([y, uv], axis=0)
