"""Open a file with FFmpeg, and nothing but the file: one place for every probe and decode.

FFmpeg's demuxers follow references: an HLS playlist, an ``ffconcat`` list or an SDP file
found in DIR could make it read files outside DIR or open network connections. Every open
goes through :func:`open_input`, which allows only the ``file`` protocol and the container
formats a video directory holds, so such a file is refused before it is read.
"""

from __future__ import annotations

from pathlib import Path

import av
from av.stream import Disposition

from ..errors import DecodeError

__all__ = ["ALLOWED_FORMATS", "open_input", "open_video", "video_stream", "describe_stream", "NotAllowedFormat"]

# FFmpeg demuxer names (``ffmpeg -demuxers``) for video containers and raw video streams.
# Not here, on purpose: hls, concat, sdp, rtp, rtsp, image2 (patterns), tee, data and the
# like: formats that open other files or connections named inside them.
ALLOWED_FORMATS = (
    "mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf", "ogg", "mxf", "nut",
    "h264", "hevc", "ivf", "m4v", "mpegvideo", "obu", "mjpeg", "yuv4mpegpipe",
)
_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(ALLOWED_FORMATS)}


class NotAllowedFormat(ValueError):
    """FFmpeg refused the file under the restrictions: a playlist, a descriptor, or not a video."""


def open_input(path: Path) -> av.container.InputContainer:
    """``av.open`` restricted to local files in :data:`ALLOWED_FORMATS`.

    A file in another format raises :class:`NotAllowedFormat` (FFmpeg itself only says
    "Invalid argument"); other failures raise PyAV's errors and ``OSError`` as ``av.open`` does.
    """
    try:
        return av.open(str(path), options=dict(_OPTIONS))
    except av.ArgumentError as e:
        raise NotAllowedFormat(
            f"not a container format framestream reads (allowed: {', '.join(ALLOWED_FORMATS)})") from e


def open_video(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The file's container and its video stream (:func:`video_stream`), for decoding; DecodeError says why not."""
    try:
        container = open_input(path)
    except NotAllowedFormat as e:
        raise DecodeError(f"cannot open: {e}") from e
    except av.FFmpegError as e:
        raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
    except OSError as e:
        raise DecodeError(f"cannot open: {e.strerror or e}") from e
    stream = video_stream(container)
    if stream is None:
        container.close()
        raise DecodeError("no video stream")
    if stream.codec_context is None:
        container.close()
        raise DecodeError("unsupported video codec: this FFmpeg build has no decoder for it")
    return container, stream


_NOT_VIDEO = (Disposition.attached_pic | Disposition.still_image).value  # cover art, a poster frame


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video a file holds: the one stream every probe, plan and decode of it reads.

    Not simply the first video stream: cover art (an attached picture) and still-image
    tracks are video streams too, and may come first. Those are passed over (by their
    disposition, or a declared count of one frame while another stream declares more);
    among the rest, FFmpeg's own choice (``av_find_best_stream``, which prefers streams it
    saw several frames of), then the default one, then the first.
    """
    moving = [s for s in container.streams.video if not _flagged_still(s)]
    if len(moving) <= 1:
        return moving[0] if moving else None  # none: cover art of a sound file is no video
    if any((s.frames or 0) > 1 for s in moving):
        moving = [s for s in moving if (s.frames or 0) != 1]  # a one-frame track beside a video: a still
    best = _ffmpeg_best(container)
    return min(moving, key=lambda s: (s is not best, not _disposition(s) & Disposition.default.value, s.index))


def _disposition(stream: av.video.stream.VideoStream) -> int:
    """FFmpeg's disposition bits (PyAV 14 gives an ``enum.Flag``, later ones an ``IntFlag``)."""
    return int(stream.disposition.value)


def _flagged_still(stream: av.video.stream.VideoStream) -> bool:
    return bool(_disposition(stream) & _NOT_VIDEO)


def _ffmpeg_best(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    try:
        return container.streams.best("video")
    except (av.FFmpegError, ValueError):
        return None


def describe_stream(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> str | None:
    """Which video stream :func:`video_stream` chose, for the log, when there was a choice."""
    others = [s for s in container.streams.video if s is not stream]
    if not others:
        return None
    cc = stream.codec_context
    what = f"{cc.name} {cc.width}x{cc.height}" if cc is not None else "unknown codec"
    skipped = ", ".join(f"#{s.index}{' (a still image)' if _flagged_still(s) or s.frames == 1 else ''}"
                        for s in others)
    return f"{len(others) + 1} video streams: decoding stream #{stream.index} ({what}), not {skipped}"
