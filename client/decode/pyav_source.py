"""CPU decoding with PyAV (FFmpeg): threaded codec; frames are resized only when sampled.

A thin driver of the shared loop (``frames.py``), which numbers, times, selects and checks
the frames; here only how libavcodec is fed and how a frame becomes a letterboxed image.
"""

from __future__ import annotations

import functools
import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..colour import Colour, stream_colour
from ..errors import DecodeError
from ..letterbox import LetterboxPlan, SourceTaps, grey_canvas, pad_into, quarter_turns, source_taps
from . import DecodedFrame, FrameRange, Letterboxed, PlanFor, Sampling
from .checks import Demuxed, declared_rate, has_timestamps, video_info
from .container import describe_stream, open_video
from .ffmpeg_log import Messages
from .frames import Clock, Cut, Feed
from .layout import read_layout

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
        self._container, self._stream = open_video(path)
        self.info = video_info(self._container, self._stream)
        chosen = describe_stream(self._container, self._stream)
        if chosen:
            log.debug("%s: %s", path.name, chosen)

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        c, s = self._container, self._stream
        layout = None
        if self.sampling.keyframes and self.frame_range is None:
            # Where the key frames are, from one demux pass (no decoding), on an open of its
            # own: a raw stream cannot seek back.
            try:
                layout = read_layout(self.path)
            except av.FFmpegError as e:
                raise DecodeError(f"cannot demux: {_reason(e)}") from e
        clock = Clock(s.time_base, s.start_time or 0, declared_rate(c, s), has_timestamps(c))
        cut = Cut(self.info, clock, self.sampling, self.frame_range, layout)
        yield from cut.frames(_PyAVDriver(c, s, self.threads), plan_for)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "PyAVSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PyAVDriver:
    """libavcodec, threaded; key frames only by skipping the others in the decoder."""

    name = "decoding"
    failures = (av.FFmpegError,)

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 threads: int) -> None:
        self.container, self.stream = container, stream
        self.packets = 0
        self.demuxed = Demuxed()
        self._messages = Messages(container, stream.index)
        self._ends: dict[int, tuple[int, Fraction]] = {}  # stream index -> (its last packet's end, time base)
        self._colour: Colour | None = None
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads

    def decode(self, feed: Feed) -> Iterator[tuple[int | None, av.VideoFrame]]:
        s = self.stream
        if feed.key_pts is not None:
            s.codec_context.skip_frame = "NONKEY"  # the other frames are not decoded at all
        packets = self._demux() if feed.seek_pts is None else self._from_key(feed.seek_pts)
        for packet in packets:
            if packet.stream is not s:
                continue
            if packet.size and packet.is_discard:
                self.demuxed.discarded += 1  # decoded as a reference; FFmpeg shows no frame of it
            else:
                self.packets += bool(packet.size)
            for frame in packet.decode():
                yield frame.pts, frame
        self._finish()

    def _demux(self) -> Iterator[av.Packet]:
        """Every stream's packets from here on (the end of the file is every stream's end),
        with the demuxer's error messages caught for this container."""
        packets, read, ends = self.container.demux(), self._messages.read, self._ends
        while (packet := read(packets)) is not None:
            ts = packet.pts
            if ts is not None and packet.size:
                end = ts + (packet.duration or 0)  # in the packet's stream time base
                index = packet.stream.index
                known = ends.get(index)
                if known is None or end > known[0]:
                    ends[index] = (end, packet.time_base)
            yield packet

    def _from_key(self, key_pts: int) -> Iterator[av.Packet]:
        """Packets from the key frame at ``key_pts`` on. A seek may land after it (MPEG-TS
        and MPEG-PS seek by dts, or by a nearby timestamp): the first key frame read shows
        where it landed, and a late landing seeks again, further back each time, down to
        the stream's start."""
        c, s = self.container, self.stream
        start = s.start_time if s.start_time is not None else 0
        step = max(1, round(1 / s.time_base))  # one second, doubled on each retry
        target = key_pts
        while True:
            c.seek(target, stream=s, backward=True, any_frame=False)
            packets = self._demux()
            for packet in packets:
                if packet.stream is s and packet.size and packet.is_keyframe and packet.pts is not None:
                    if packet.pts == key_pts:
                        self._messages.errors.clear()  # about where the seek landed, not about the file
                        yield packet
                        yield from packets
                        return
                    if packet.pts > key_pts:
                        break  # landed after it
            if target <= start:
                raise DecodeError(f"no key frame at pts {key_pts} where the demux pass found one (damaged file)")
            target, step = max(start, target - step), 2 * step

    def _finish(self) -> None:
        """The file's end as demuxed: where its last packet ends, in the container's seconds;
        and the demuxer's error messages."""
        if self._ends:
            first = (self.container.start_time or 0) / av.time_base
            self.demuxed.end_s = max(float(end * tb) for end, tb in self._ends.values()) - first
        self.demuxed.errors = list(self._messages.errors)

    def keep(self, frame: av.VideoFrame) -> av.VideoFrame:
        return frame

    def is_key(self, frame: av.VideoFrame) -> bool:
        return bool(frame.key_frame)

    def display_hw(self, frame: av.VideoFrame) -> tuple[int, int]:
        return _display_hw(frame)

    def picture(self, frame: av.VideoFrame, plan: LetterboxPlan) -> Letterboxed:
        if self._colour is None:  # known once a frame is decoded
            self._colour = stream_colour(self.stream.codec_context)
        return Letterboxed(_letterbox(frame, plan, self._colour))

    def reason(self, error: BaseException) -> str:
        return _reason(error)


def _display_hw(frame: av.VideoFrame) -> tuple[int, int]:
    return (frame.width, frame.height) if _quarter_turns(frame) % 2 else (frame.height, frame.width)


def _quarter_turns(frame: av.VideoFrame) -> int:
    return quarter_turns(frame.rotation)


def _letterbox(frame: av.VideoFrame, plan: LetterboxPlan, colour: Colour) -> np.ndarray:
    turns = _quarter_turns(frame)
    rh, rw = plan.resized_hw
    cv2 = opencv()
    if cv2 is not None:  # convert at full size (or where the resize reads), then resize as ultralytics does
        canvas, region = grey_canvas(plan)
        taps = None if turns or frame.format.name not in _EXACT_FORMATS else source_taps(plan.src_hw, plan.resized_hw)
        if taps is not None:
            rgb = _rgb_at_taps(frame, colour, cv2, taps, region)
        else:
            rgb = _rgb(frame, colour, cv2)
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, turns))
        if rgb is not region:
            _resize_into(cv2, rgb, region)
        return canvas
    coded_w, coded_h = (rh, rw) if turns % 2 else (rw, rh)
    rgb = frame.reformat(width=coded_w, height=coded_h, format="rgb24",
                         interpolation=_SWSCALE_INTERPOLATION).to_ndarray()
    if turns:
        rgb = np.rot90(rgb, turns)
    return pad_into(rgb, plan)


def _resize_into(cv2, rgb: np.ndarray, region: np.ndarray) -> None:
    """``rgb`` resized with INTER_LINEAR straight into ``region`` (a view of the canvas)."""
    rh, rw = region.shape[:2]
    if rgb.shape[:2] == (rh, rw):
        region[...] = rgb
        return
    out = cv2.resize(rgb, (rw, rh), dst=region, interpolation=cv2.INTER_LINEAR)
    if out.ctypes.data != region.ctypes.data:  # OpenCV allocated after all: copy it in
        region[...] = out


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


def _rgb_at_taps(frame: av.VideoFrame, colour: Colour, cv2, taps: SourceTaps, region: np.ndarray) -> np.ndarray:
    """RGB of only the pixels the resize reads (:class:`client.letterbox.SourceTaps`), each
    with its own chroma sample (the reference's nearest upsampling, ``c[row // 2, col // 2]``).
    Written into ``region`` (and returned) when no resize is left to do."""
    y, u, v = yuv_planes(frame)
    rows, cols = taps.rows, taps.cols

    def gather(plane: np.ndarray, r: np.ndarray | None, c: np.ndarray | None) -> np.ndarray:
        if r is not None:
            plane = plane.take(r, axis=0)
        return plane if c is None else plane.take(c, axis=1)

    # Chroma is read at every luma position kept; along an axis read whole, that is each sample twice.
    c_rows = (np.arange(y.shape[0]) if rows is None else rows) // 2
    c_cols = (np.arange(y.shape[1]) if cols is None else cols) // 2
    yuv = cv2.merge([np.ascontiguousarray(gather(p, r, c)) for p, r, c in
                     ((y, rows, cols), (u, c_rows, c_cols), (v, c_rows, c_cols))])
    if yuv.shape[:2] == region.shape[:2]:
        out = cv2.transform(yuv, colour.affine(), dst=region)
        if out.ctypes.data == region.ctypes.data:
            return region
        region[...] = out
        return region
    return cv2.transform(yuv, colour.affine())


def yuv_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U and V of a planar 8-bit frame as [height, width] views of its buffers (no copy)."""
    return tuple(np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width] for p in frame.planes[:3])


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)
