"""One video's annotated copy and contact sheet, from its source and its detections.

The source is decoded once with PyAV (the hardened open of :mod:`client.decode.container`),
frames numbered in presentation order from 0 as the bulk run numbered them. Each frame is
turned as its rotation metadata says (the detections are in the picture a viewer sees),
drawn on, turned back and encoded with libx264 at the source's coded size, with the source's
rotation, time base and timestamps: a player shows it exactly as it shows the source.
Frames the run did not infer (``--every``, ``--fps``, ``--keyframes``) keep the last inferred
frame's boxes (``hold``) or stay plain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw

from .decode.container import open_video
from .draw import draw_detections
from .errors import DecodeError
from .letterbox import quarter_turns
from .results import FrameRows

__all__ = ["SheetSpec", "Annotated", "annotate"]

_CRF = "18"  # visually lossless for x264: the boxes' colours survive the encoding
_THUMB_WIDTH = 320  # contact sheet cells, in pixels (never wider than the video)
_FALLBACK_RATE = Fraction(25)  # a stream that declares no rate (the bulk run would have refused it)


@dataclass(frozen=True)
class SheetSpec:
    cols: int = 4
    rows: int = 4


@dataclass(frozen=True)
class Annotated:
    frames: int  # frames encoded (every frame of the source)
    drawn: int  # of which with boxes (inferred, or holding the last inferred frame's)
    sheet: Image.Image | None  # the contact sheet (None: no inferred frame to show)


def sheet_picks(frames: list[FrameRows], spec: SheetSpec) -> list[int]:
    """Frame indices for the contact sheet: inferred frames spread evenly over the video."""
    n = min(spec.cols * spec.rows, len(frames))
    if n == 0:
        return []
    if n == 1:
        return [frames[0].index]
    return [frames[round(i * (len(frames) - 1) / (n - 1))].index for i in range(n)]


def annotate(source, frames: list[FrameRows], names: Mapping[int, str], dst, *, hold: bool = True,
             sheet: SheetSpec = SheetSpec()) -> Annotated:
    """Write the annotated MP4 of ``source`` to the binary file object ``dst``; DecodeError when
    the source cannot be read whole or has fewer frames than the detections name."""
    container, stream = open_video(source)
    by_index = {f.index: f for f in frames}
    picks = set(sheet_picks(frames, sheet))
    thumbs: list[tuple[FrameRows, Image.Image]] = []
    encoder = _Encoder(dst, stream)
    shown: FrameRows | None = None
    count = drawn = 0
    try:
        for frame in container.decode(stream):
            inferred = by_index.get(count)
            shown = inferred if inferred is not None else (shown if hold else None)
            turns = quarter_turns(frame.rotation)
            picture = Image.fromarray(np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), turns)))
            if shown is not None:
                draw_detections(picture, shown.detections, names, shown.score_places)
                drawn += 1
            if count in picks:
                thumbs.append((inferred, _thumbnail(picture, inferred)))
            encoder.encode(np.rot90(np.asarray(picture), -turns), frame, turns)
            count += 1
        encoder.close()
    except av.FFmpegError as e:
        raise DecodeError(f"decoding failed after {count} frames: {getattr(e, 'strerror', None) or e}",
                          frames_decoded=count) from e
    finally:
        container.close()
    last = max(by_index, default=-1)
    if count <= last:
        raise DecodeError(f"the source has {count} frames but the detections go to frame {last}: "
                          "it is not the video they were made from", frames_decoded=count)
    return Annotated(count, drawn, _grid([t for _, t in thumbs], sheet) if thumbs else None)


class _Encoder:
    """libx264 into an MP4, opened at the first frame (when its rotation is known)."""

    def __init__(self, dst, source: av.video.stream.VideoStream) -> None:
        self.dst, self.source = dst, source
        self.output = None
        self.stream = None
        self.last_pts: int | None = None

    def _open(self, first: av.VideoFrame) -> None:
        src = self.source
        self.output = av.open(self.dst, "w", format="mp4")
        rate = src.average_rate or src.guessed_rate or _FALLBACK_RATE
        s = self.output.add_stream("libx264", rate=rate)
        s.width, s.height = first.width, first.height
        s.pix_fmt = "yuv420p" if first.width % 2 == 0 and first.height % 2 == 0 else "yuv444p"
        s.options = {"crf": _CRF, "preset": "veryfast"}
        self.timed = first.pts is not None and src.time_base is not None
        s.time_base = src.time_base if self.timed else 1 / Fraction(rate)
        s.codec_context.time_base = s.time_base
        if first.rotation:
            if not hasattr(s, "set_display_rotation"):
                raise DecodeError(f"drawing on a rotated video ({first.rotation:g} degrees) keeps its rotation, "
                                  "which needs PyAV 17.1 or later: pip install 'av>=17.1'")
            s.set_display_rotation(first.rotation)
        self.stream = s

    def encode(self, rgb: np.ndarray, frame: av.VideoFrame, turns: int) -> None:
        if self.stream is None:
            self._open(frame)
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        pts = frame.pts - (self.source.start_time or 0) if self.timed and frame.pts is not None else None
        if pts is None or (self.last_pts is not None and pts <= self.last_pts):
            pts = 0 if self.last_pts is None else self.last_pts + 1  # untimed: frame by frame at the rate
        out.pts, out.time_base, self.last_pts = pts, self.stream.time_base, pts
        for packet in self.stream.encode(out):
            self.output.mux(packet)

    def close(self) -> None:
        if self.stream is None:
            raise DecodeError("the source has no frames to draw on")
        for packet in self.stream.encode():
            self.output.mux(packet)
        self.output.close()


def _thumbnail(picture: Image.Image, inferred: FrameRows | None) -> Image.Image:
    w, h = picture.size
    tw = min(_THUMB_WIDTH, w)
    thumb = picture.resize((tw, max(1, round(h * tw / w))), Image.BILINEAR)
    if inferred is not None:
        ImageDraw.Draw(thumb).text((3, 3), f"frame {inferred.index}  {inferred.t_s:.2f} s", fill=(255, 255, 255),
                                   stroke_width=2, stroke_fill=(0, 0, 0))
    return thumb


def _grid(thumbs: list[Image.Image], spec: SheetSpec) -> Image.Image:
    """Cells left to right, top to bottom; as many rows as the thumbnails fill."""
    tw, th = thumbs[0].size
    cols = min(spec.cols, len(thumbs))
    rows = math.ceil(len(thumbs) / cols)
    sheet = Image.new("RGB", (cols * tw, rows * th), (32, 32, 32))
    for i, thumb in enumerate(thumbs):
        sheet.paste(thumb, ((i % cols) * tw, (i // cols) * th))
    return sheet
