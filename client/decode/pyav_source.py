"""CPU decoding with PyAV (FFmpeg): threaded codec; frames are resized only when sampled.

A damaged file is reported, never passed off as complete (``checks.py``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..colour import Colour, stream_colour
from ..errors import DecodeError
from ..letterbox import LetterboxPlan, pad_into, quarter_turns
from . import DecodedFrame, FrameRange, Letterboxed, PlanFor, Sampling
from .checks import check_complete, check_range, video_info
from .layout import demux_layout
from .sampling import select

log = logging.getLogger(__name__)

_SWSCALE_INTERPOLATION = "BILINEAR"
_EXACT_FORMATS = ("yuv420p", "yuvj420p")  # converted with our coefficients; others by swscale


@functools.lru_cache(maxsize=1)
def opencv():
    """OpenCV when installed (``framestream[exact]``), else None.

    ultralytics resizes with OpenCV's INTER_LINEAR: two taps per axis, no anti-aliasing.
    swscale's BILINEAR widens its filter when it shrinks (an area average), so on fine
    detail it differs by many levels (measured: 47% of pixels within 2 levels on 1080p
    test clips). swscale's YUV to RGB is fixed point, up to 3 levels from the exact
    conversion. With OpenCV both steps are the spec's (``client.letterbox``,
    ``client.colour``), as the CUDA kernel's are; without it, swscale's.
    """
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def resize_method() -> str:
    """How the CPU path converts and resizes, for the one log line at start."""
    return "reference YUV->RGB and OpenCV INTER_LINEAR (as ultralytics)" if opencv() else (
        "swscale YUV->RGB and bilinear (pip install 'framestream[exact]' for the reference letterbox)")


class PyAVSource:
    """Decode one file with PyAV; only the sampled frames are converted and letterboxed."""

    def __init__(self, path: Path, *, sampling: Sampling = Sampling(), threads: int = 0,
                 frame_range: FrameRange | None = None) -> None:
        self.path = path
        self.sampling = sampling
        self.threads = threads
        self.frame_range = frame_range
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as e:
            raise DecodeError(f"cannot open: {_reason(e)}") from e
        except OSError as e:
            raise DecodeError(f"cannot open: {e.strerror or e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError("no video stream")
        self._stream = self._container.streams.video[0]
        if self._stream.codec_context is None:
            self._container.close()
            raise DecodeError("unsupported video codec: this FFmpeg build has no decoder for it")
        self.info = video_info(self._container, self._stream)

    def _configure_decoder(self) -> av.video.stream.VideoStream:
        s = self._stream
        s.thread_type = "AUTO"
        s.codec_context.thread_count = self.threads
        return s

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        if self.frame_range is not None:
            yield from self._range_frames(plan_for, self.frame_range)
            return
        keyframe_index = self._keyframe_indices() if self.sampling.keyframes else None
        s = self._configure_decoder()
        if keyframe_index is not None:
            s.codec_context.skip_frame = "NONKEY"  # the other frames are not decoded at all
        start = s.start_time or 0
        packets = frames = 0
        last_t: float | None = None

        def decoded() -> Iterator[tuple[int, float, av.VideoFrame]]:
            nonlocal packets, frames, last_t
            for packet in self._container.demux(s):
                packets += bool(packet.size)
                for frame in packet.decode():
                    last_t = float((frame.pts - start) * s.time_base) if frame.pts is not None else 0.0
                    index = keyframe_index[frame.pts] if keyframe_index is not None else frames
                    frames += 1
                    yield index, last_t, frame

        plan: LetterboxPlan | None = None
        try:
            for index, t, frame in select(decoded(), self.sampling):
                if plan is None:
                    plan, colour = plan_for(_display_hw(frame)), stream_colour(s.codec_context)
                yield DecodedFrame(index, t, Letterboxed(_letterbox(frame, plan, colour)), plan)
        except av.FFmpegError as e:
            raise DecodeError(f"decoding failed after {frames} frames: {_reason(e)}", frames_decoded=frames) from e
        check_complete(self.info, packets, frames, last_t, keyframes=keyframe_index is not None)

    def _range_frames(self, plan_for: PlanFor, r: FrameRange) -> Iterator[DecodedFrame]:
        """A segment: seek to its key frame, emit its selected frames, stop past its end."""
        s = self._configure_decoder()
        start = s.start_time or 0
        emitted = 0
        plan: LetterboxPlan | None = None
        try:
            self._container.seek(r.seek_pts, stream=s, backward=True, any_frame=False)
            for frame in self._container.decode(s):
                index = r.index_of_pts.get(frame.pts) if frame.pts is not None else None
                if index is None or index < r.start:
                    continue  # before the range (or a frame the demux pass did not see)
                if index >= r.end:
                    break  # presentation order: every frame of the range has been output
                if index in r.selected:
                    if plan is None:
                        plan, colour = plan_for(_display_hw(frame)), stream_colour(s.codec_context)
                    t = float((frame.pts - start) * s.time_base)
                    yield DecodedFrame(index, t, Letterboxed(_letterbox(frame, plan, colour)), plan)
                    emitted += 1
        except av.FFmpegError as e:
            raise DecodeError(f"decoding frames {r.start}-{r.end - 1} failed after {emitted}: {_reason(e)}",
                              frames_decoded=emitted) from e
        check_range(emitted, r.expected, r.start, r.end)

    def _keyframe_indices(self) -> dict[int, int]:
        """Presentation index of every key frame, by pts, from one demux pass (no decoding)."""
        layout = demux_layout(self._container, self._stream)
        self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        return {layout.pts[i]: i for i in layout.key_indices}

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "PyAVSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _display_hw(frame: av.VideoFrame) -> tuple[int, int]:
    return (frame.width, frame.height) if _quarter_turns(frame) % 2 else (frame.height, frame.width)


def _quarter_turns(frame: av.VideoFrame) -> int:
    return quarter_turns(frame.rotation)


def _letterbox(frame: av.VideoFrame, plan: LetterboxPlan, colour: Colour) -> np.ndarray:
    turns = _quarter_turns(frame)
    rh, rw = plan.resized_hw
    cv2 = opencv()
    if cv2 is not None:  # convert at full size, then resize exactly as ultralytics does
        rgb = _rgb(frame, colour, cv2)
        if turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, turns))
        if rgb.shape[:2] != (rh, rw):
            rgb = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
        return pad_into(rgb, plan)
    coded_w, coded_h = (rh, rw) if turns % 2 else (rw, rh)
    rgb = frame.reformat(width=coded_w, height=coded_h, format="rgb24",
                         interpolation=_SWSCALE_INTERPOLATION).to_ndarray()
    if turns:
        rgb = np.rot90(rgb, turns)
    return pad_into(rgb, plan)


def _rgb(frame: av.VideoFrame, colour: Colour, cv2) -> np.ndarray:
    """Full-size RGB: 8-bit 4:2:0 with the shared coefficients, chroma nearest-upsampled as
    :func:`client.colour.nv12_to_rgb_reference` (measured on 1080p: every pixel within 1
    level of it); other pixel formats (10-bit, 4:2:2, RGB, ...) through swscale."""
    if frame.format.name not in _EXACT_FORMATS:
        return frame.to_ndarray(format="rgb24")
    w, h = frame.width, frame.height
    if colour.is_opencv_default and w % 2 == 0 and h % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)  # 3x faster than transform
    y, u, v = yuv_planes(frame)
    full = [cv2.resize(c, (2 * c.shape[1], 2 * c.shape[0]), interpolation=cv2.INTER_NEAREST)[:h, :w]
            for c in (u, v)]
    return cv2.transform(cv2.merge([y, *full]), colour.affine())


def yuv_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U and V of a planar 8-bit frame as [height, width] views of its buffers (no copy)."""
    return tuple(np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width] for p in frame.planes[:3])


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)
