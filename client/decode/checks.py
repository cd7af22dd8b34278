"""What a container declares, and whether a decode delivered all of it.

One rule for every path (whole file, key-frame segment, ``--keyframes``; PyAV or NVDEC): a
file whose frames don't add up to what its container declares is an error. Besides the
decoder's own errors, frames out are checked against packets in (decoders conceal some
damage by dropping frames), against the frame count and duration the container declares
for the video (a truncated Matroska file decodes, and demuxes, to its end without any
error), against the duration it declares for the whole file where the video's own is not
given (a truncated FLV with sound), and against the demuxer's own error messages ("File
ended prematurely"). What the container declares is read as it means it: packets an MP4
edit list cuts away are no frames of the video, and a variable frame rate is recognised
by the frames' times reaching the declared end, not held to duration x rate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import av

from ..errors import DecodeError
from . import VideoInfo

_NO_TIMESTAMPS = 0x80  # AVFMT_NOTIMESTAMPS: raw elementary streams (.h264, .hevc, .mjpeg)
# AVI stores no presentation times: FFmpeg's pts there count packets in decode order, so
# with B-frames they go backwards; its frames are timed by index and rate instead.
_DECODE_ORDER_PTS = frozenset({"avi"})
# Containers that write the file's duration in their header, so a copy cut short still
# declares the whole length (others, MPEG-TS say, measure it from the file's own end).
_HEADER_DURATION = frozenset({"matroska", "webm", "flv", "asf", "mov", "mp4"})
_TAG_DURATION = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")  # Matroska's per-track DURATION tag


@dataclass
class Demuxed:
    """What demuxing showed besides the video's frames: evidence for :func:`check_complete`."""

    discarded: int = 0  # video packets an edit list cuts away: decoded for reference, never shown
    end_s: float | None = None  # where the file's last packet (any stream) ends, in the file's seconds
    errors: list[str] = field(default_factory=list)  # the demuxer's own error messages


def video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream, *,
               for_estimate: bool = False) -> VideoInfo:
    """The one reading of a container's declarations, for the checks and for discovery.

    The video's duration is its stream's own (``stream.duration``, or Matroska's per-track
    ``DURATION`` tag), else the container's when the video is its only stream. With other
    streams beside it (sound) the container's duration is the file's, checked against where
    the file's last packet ends (``file_duration_s``). ``for_estimate``: discovery's work
    estimate may take the container's duration as the video's (audio may run longer than
    the video, so it is no check), and a frame count from duration x rate when the
    container gives none.
    """
    s = stream
    duration = float(s.duration * s.time_base) if s.duration else _tag_duration(s)
    file_duration = None
    if duration is None and container.duration:
        if for_estimate or len(container.streams) == 1:
            duration = container.duration / av.time_base
        elif _HEADER_DURATION & set(container.format.name.split(",")):
            file_duration = container.duration / av.time_base
    rate = declared_rate(container, s)
    frames = int(s.frames or 0)
    if for_estimate and not frames and duration and rate:
        frames = round(duration * float(rate))
    codec = s.codec_context.name if s.codec_context is not None else "unknown"  # no decoder: decoding says so
    return VideoInfo(codec=codec, frames=frames, duration_s=duration,
                     fps=float(rate) if rate else None, file_duration_s=file_duration)


def _tag_duration(stream: av.video.stream.VideoStream) -> float | None:
    """Matroska's ``DURATION`` tag of the track (``HH:MM:SS.nnnnnnnnn``; ``DURATION-eng`` with a language)."""
    for key, value in stream.metadata.items():
        if key.upper().split("-")[0] == "DURATION":
            m = _TAG_DURATION.match(value.strip())
            if m:
                seconds = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
                return seconds or None
    return None


def declared_rate(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Fraction | None:
    """The frame rate the file declares. A raw stream's only honest one is its bitstream's
    (an H.264 SPS, say): the demuxer's average rate there is its 25 fps default, made up."""
    if container.format.flags & _NO_TIMESTAMPS:
        rate = stream.codec_context.framerate if stream.codec_context is not None else None
        return Fraction(rate) if rate else None
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def has_timestamps(container: av.container.InputContainer) -> bool:
    """Whether the packets' pts are presentation times: not in a raw stream (none, or made
    up from a default rate), nor in AVI (decode order)."""
    return not container.format.flags & _NO_TIMESTAMPS and not _DECODE_ORDER_PTS & set(container.format.name.split(","))


def check_complete(info: VideoInfo, packets: int, frames: int, last_t: float | None, *, delivered: int,
                   demuxed: Demuxed | None = None, last_gap: float = 0.0) -> None:
    """Raise DecodeError if ``frames`` frames out of ``packets`` packets, the last at ``last_t``
    (``last_gap`` after the one before it), fall short of the file the container declares;
    ``delivered``: frames passed on so far; ``demuxed``: what the demuxer showed."""
    demuxed = demuxed or Demuxed()
    declared = max(info.frames - demuxed.discarded, 0) if info.frames else 0
    frame_s = 1 / info.fps if info.fps else 0.04
    # The last frame lasts about one frame at the declared rate, or as long as the gap
    # before it (a variable rate slowed to 1 frame/s): either way it reaches the end.
    slack = max(2 * frame_s, 0.1, 2 * last_gap)
    problem = None
    if frames == 0:
        problem = "no frame could be decoded"
    elif declared and frames < declared:
        problem = f"decoded {frames} of the {declared} frames the container declares"
    elif frames < packets:
        problem = f"{packets - frames} of {packets} packets could not be decoded (corrupt data)"
    elif info.duration_s and last_t is not None and last_t + frame_s < info.duration_s - slack:
        problem = f"the video ends at {last_t + frame_s:.2f} s of the {info.duration_s:.2f} s declared (truncated)"
    elif info.file_duration_s and demuxed.end_s is not None and demuxed.end_s < info.file_duration_s - slack:
        problem = (f"the file's streams end at {demuxed.end_s:.2f} s of the {info.file_duration_s:.2f} s its "
                   "container declares (truncated)")
    elif demuxed.errors:
        problem = f"the demuxer reports damage: {demuxed.errors[0]} (truncated or corrupt file)"
    if problem:
        raise DecodeError(problem, frames_decoded=delivered)


def check_range(emitted: int, expected: int, start: int, end: int, decoded: int) -> None:
    """A key-frame segment must decode every frame of its range and deliver every one planned."""
    if decoded < end - start or emitted < expected:
        raise DecodeError(f"frames {start}-{end - 1}: decoded {decoded} of {end - start}, delivered {emitted} "
                          f"of {expected} (damaged data)", frames_decoded=emitted)
