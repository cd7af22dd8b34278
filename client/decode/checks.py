"""What a container declares, and whether a decode delivered all of it.

Shared by the PyAV and NVDEC sources, so a damaged file is an error on either path: besides
the decoder's own errors, frames out are checked against packets in (decoders conceal some
damage by dropping frames) and against the frame count and duration the container declares
(a truncated Matroska file decodes to its end without any error).
"""

from __future__ import annotations

import av

from ..errors import DecodeError
from . import VideoInfo


def video_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    s = stream
    duration = float(s.duration * s.time_base) if s.duration else None
    if duration is None and container.duration and len(container.streams) == 1:
        duration = container.duration / av.time_base
    rate = s.average_rate or s.guessed_rate
    return VideoInfo(codec=s.codec_context.name, frames=int(s.frames or 0), duration_s=duration,
                     fps=float(rate) if rate else None)


def check_complete(info: VideoInfo, packets: int, frames: int, last_t: float | None, *, keyframes: bool) -> None:
    """Raise DecodeError if a whole-file decode of ``packets`` gave fewer frames than it should."""
    problem = None
    if frames == 0:
        problem = "no frame could be decoded"
    elif not keyframes and info.frames and frames < info.frames:
        problem = f"decoded {frames} of the {info.frames} frames the container declares"
    elif not keyframes and frames < packets:
        problem = f"{packets - frames} of {packets} packets could not be decoded (corrupt data)"
    elif info.duration_s and last_t is not None and not keyframes:
        frame_s = 1 / info.fps if info.fps else 0.04
        expected = info.duration_s / frame_s
        if last_t + frame_s < info.duration_s - max(2 * frame_s, 0.1):
            problem = f"the video ends at {last_t + frame_s:.2f} s of the {info.duration_s:.2f} s declared (truncated)"
        elif not info.frames and frames < 0.97 * expected - 1:
            # Matroska declares no frame count; a demuxer that drops damaged blocks shows here.
            problem = (f"decoded {frames} frames where {info.duration_s:.2f} s at {1 / frame_s:g} fps holds about "
                       f"{expected:.0f} (corrupt data)")
    if problem:
        raise DecodeError(problem, frames_decoded=frames)


def check_range(emitted: int, expected: int, start: int, end: int) -> None:
    """A key-frame segment must deliver every frame planned for it."""
    if emitted < expected:
        raise DecodeError(f"frames {start}-{end - 1}: decoded {emitted} of {expected} (damaged data)",
                          frames_decoded=emitted)
