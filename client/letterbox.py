"""Letterbox geometry exactly as ultralytics computes it, and the NumPy reference image op.

The plan is made once per video (every frame of a video has the same size); the per-frame
work is a resize into ``resized_hw`` and a copy into a 114-grey canvas. ``letterbox_reference``
is the spec that the swscale (CPU) and CUDA (GPU) implementations are checked against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .contract import PAD_VALUE, STRIDE

__all__ = ["LetterboxPlan", "plan_letterbox", "quarter_turns", "boxes_to_source", "boxes_to_model", "pad_into",
           "grey_canvas", "SourceTaps", "source_taps", "letterbox_reference"]


@dataclass(frozen=True)
class LetterboxPlan:
    src_hw: tuple[int, int]  # the frame as a viewer sees it (rotation applied)
    dst_hw: tuple[int, int]  # the model input
    resized_hw: tuple[int, int]
    top: int
    left: int

    @property
    def gain_xy(self) -> tuple[float, float]:
        return self.resized_hw[1] / self.src_hw[1], self.resized_hw[0] / self.src_hw[0]


def plan_letterbox(src_hw: tuple[int, int], model_hw: tuple[int, int], *, minimal: bool) -> LetterboxPlan:
    """Fit ``src_hw`` into ``model_hw``; ``minimal`` pads only up to the next multiple of 32.

    ``minimal`` is ultralytics' ``auto=True`` and needs a model with dynamic H and W: a
    1280x720 frame goes to 640x384 instead of 640x640, 40% less arithmetic.
    """
    h, w = src_hw
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {w}x{h}")
    r = min(model_hw[0] / h, model_hw[1] / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = model_hw[1] - new_w, model_hw[0] - new_h
    if minimal:
        dw, dh = dw % STRIDE, dh % STRIDE
    top, left = round(dh / 2 - 0.1), round(dw / 2 - 0.1)
    return LetterboxPlan(src_hw=(h, w), dst_hw=(new_h + dh, new_w + dw), resized_hw=(new_h, new_w), top=top, left=left)


def quarter_turns(rotation: float | None) -> int:
    """Counterclockwise quarter turns that display a frame (FFmpeg's display-matrix angle),
    0-3: the CPU path turns with ``np.rot90(rgb, turns)``, the CUDA kernel samples the same."""
    return round((rotation or 0) / 90) % 4


def boxes_to_source(xyxy: np.ndarray, plan: LetterboxPlan) -> np.ndarray:
    """Model-pixel boxes (N, 4) to source pixels: remove the pad, divide by the gains, clip."""
    gx, gy = plan.gain_xy
    out = (xyxy - [plan.left, plan.top, plan.left, plan.top]) / [gx, gy, gx, gy]
    h, w = plan.src_hw
    return np.clip(out, 0, [w, h, w, h]).astype(np.float32)


def boxes_to_model(xyxy: np.ndarray, plan: LetterboxPlan) -> np.ndarray:
    """The inverse of :func:`boxes_to_source` (without clipping), for round-trip checks."""
    gx, gy = plan.gain_xy
    return xyxy * [gx, gy, gx, gy] + [plan.left, plan.top, plan.left, plan.top]


def pad_into(resized: np.ndarray, plan: LetterboxPlan, out: np.ndarray | None = None) -> np.ndarray:
    """Place a resized (rh, rw, 3) image on a grey (H, W, 3) canvas at (top, left)."""
    if resized.shape[:2] != plan.resized_hw:
        raise ValueError(f"resized image must be {plan.resized_hw}, got {resized.shape[:2]}")
    out, region = grey_canvas(plan, out)
    region[...] = resized
    return out


def grey_canvas(plan: LetterboxPlan, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A (H, W, 3) canvas with its pad grey, and the view of the picture's place in it, for a
    resize or a colour conversion to write straight into (one full-frame copy fewer)."""
    if out is None:
        out = np.empty((*plan.dst_hw, 3), dtype=np.uint8)
    rh, rw = plan.resized_hw
    t, l = plan.top, plan.left
    out[:t] = PAD_VALUE
    out[t + rh :] = PAD_VALUE
    out[t : t + rh, :l] = PAD_VALUE
    out[t : t + rh, l + rw :] = PAD_VALUE
    return out, out[t : t + rh, l : l + rw]


@dataclass(frozen=True)
class SourceTaps:
    """The source rows and columns the 2-tap resize reads, where it reads only some.

    Shrinking 1920x1080 to 640x360 samples pixel (3i+1, 3j+1) with weight 1, and 3840x2160
    averages pixels (6i+2, 6i+3) with weights 1/2: the other 8 pixels in 9 are never read.
    Converting only ``rows`` x ``cols`` to RGB (colour conversion is per pixel) and resizing
    that to ``resized_hw`` gives, under the reference's own formula, the same taps and
    weights, so the same result, for a ninth of the conversion. ``None`` for an axis read whole.
    """

    rows: np.ndarray | None
    cols: np.ndarray | None

    @property
    def shape(self) -> tuple[int | None, int | None]:
        return (None if self.rows is None else len(self.rows), None if self.cols is None else len(self.cols))


@functools.lru_cache(maxsize=64)
def source_taps(src_hw: tuple[int, int], resized_hw: tuple[int, int]) -> SourceTaps | None:
    """:class:`SourceTaps` for a resize, or None when every source pixel is read."""
    taps = SourceTaps(_axis_taps(src_hw[0], resized_hw[0]), _axis_taps(src_hw[1], resized_hw[1]))
    return None if taps.rows is None and taps.cols is None else taps


def _axis_taps(n_in: int, n_out: int) -> np.ndarray | None:
    """One axis: the taps alone when every weight is 1 (n_out taps, an identity resize after)
    or every weight is 1/2 (2 n_out taps, a 2:1 resize after, whose taps fall on the pairs);
    None when the other weights are needed or nothing is saved."""
    lo, hi, frac = _taps(n_out, n_in)
    if np.all(frac == 0) and n_out < n_in:
        return lo
    if np.all(frac == 0.5) and 2 * n_out < n_in:
        return np.stack([lo, hi], axis=1).ravel()
    return None


def _taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps and weight of the second for each output pixel: half-pixel centres, clamped."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear_reference(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (OpenCV INTER_LINEAR, no antialias), rounded."""
    h, w = rgb.shape[:2]
    oh, ow = hw

    y0, y1, fy = _taps(oh, h)
    x0, x1, fx = _taps(ow, w)
    img = rgb.astype(np.float32)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def letterbox_reference(rgb: np.ndarray, plan: LetterboxPlan) -> np.ndarray:
    """The letterbox of one RGB frame, in plain NumPy: the spec for the fast implementations."""
    if rgb.shape[:2] != plan.src_hw:
        raise ValueError(f"frame must be {plan.src_hw}, got {rgb.shape[:2]}")
    return pad_into(resize_bilinear_reference(rgb, plan.resized_hw), plan)
