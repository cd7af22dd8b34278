"""What a container declares, and whether a decode delivered all of it.

One rule for every path (whole file, key-frame segment, ``--keyframes``; PyAV or NVDEC): a
file whose frames don't add up to what its container declares is an error. Besides the
decoder's own errors, frames out are checked against packets in (decoders conceal some
damage by dropping frames) and against the frame count and duration the container declares
(a truncated Matroska file decodes, and demuxes, to its end without any error).
"""

from __future__ import annotations

from fractions import Fraction

import av

from ..errors import DecodeError
from . import VideoInfo

_NO_TIMESTAMPS = 0x80  # AVFMT_NOTIMESTAMPS: raw elementary streams (.h264, .hevc, .mjpeg)


def video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream, *,
               for_estimate: bool = False) -> VideoInfo:
    """The one reading of a container's declarations, for the checks and for discovery.

    ``for_estimate``: discovery's work estimate may also take the container's duration when
    other streams share it (audio may run longer than the video, so it is no check), and a
    frame count from duration x rate when the container gives none.
    """
    s = stream
    duration = float(s.duration * s.time_base) if s.duration else None
    if duration is None and container.duration and (for_estimate or len(container.streams) == 1):
        duration = container.duration / av.time_base
    rate = declared_rate(container, s)
    frames = int(s.frames or 0)
    if for_estimate and not frames and duration and rate:
        frames = round(duration * float(rate))
    codec = s.codec_context.name if s.codec_context is not None else "unknown"  # no decoder: decoding says so
    return VideoInfo(codec=codec, frames=frames, duration_s=duration,
                     fps=float(rate) if rate else None)


def declared_rate(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Fraction | None:
    """The frame rate the file declares. A raw stream's only honest one is its bitstream's
    (an H.264 SPS, say): the demuxer's average rate there is its 25 fps default, made up."""
    if container.format.flags & _NO_TIMESTAMPS:
        rate = stream.codec_context.framerate if stream.codec_context is not None else None
        return Fraction(rate) if rate else None
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def has_timestamps(container: av.container.InputContainer) -> bool:
    return not container.format.flags & _NO_TIMESTAMPS


def check_complete(info: VideoInfo, packets: int, frames: int, last_t: float | None, *, delivered: int) -> None:
    """Raise DecodeError if ``frames`` frames out of ``packets`` packets, the last at ``last_t``,
    fall short of the file the container declares; ``delivered``: frames passed on so far."""
    problem = None
    if frames == 0:
        problem = "no frame could be decoded"
    elif info.frames and frames < info.frames:
        problem = f"decoded {frames} of the {info.frames} frames the container declares"
    elif frames < packets:
        problem = f"{packets - frames} of {packets} packets could not be decoded (corrupt data)"
    elif info.duration_s and last_t is not None:
        frame_s = 1 / info.fps if info.fps else 0.04
        expected = info.duration_s / frame_s
        if last_t + frame_s < info.duration_s - max(2 * frame_s, 0.1):
            problem = f"the video ends at {last_t + frame_s:.2f} s of the {info.duration_s:.2f} s declared (truncated)"
        elif not info.frames and frames < 0.97 * expected - 1:
            # Matroska declares no frame count; a demuxer that drops damaged blocks shows here.
            problem = (f"decoded {frames} frames where {info.duration_s:.2f} s at {1 / frame_s:g} fps holds about "
                       f"{expected:.0f} (corrupt data)")
    if problem:
        raise DecodeError(problem, frames_decoded=delivered)


def check_range(emitted: int, expected: int, start: int, end: int, decoded: int) -> None:
    """A key-frame segment must decode every frame of its range and deliver every one planned."""
    if decoded < end - start or emitted < expected:
        raise DecodeError(f"frames {start}-{end - 1}: decoded {decoded} of {end - start}, delivered {emitted} "
                          f"of {expected} (damaged data)", frames_decoded=emitted)
