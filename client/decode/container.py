"""Open a file with FFmpeg, and nothing but the file: one place for every probe and decode.

FFmpeg's demuxers follow references: an HLS playlist, an ``ffconcat`` list or an SDP file
found in DIR could make it read files outside DIR or open network connections. Every open
goes through :func:`open_input`, which allows only the ``file`` protocol and the container
formats a video directory holds, so such a file is refused before it is read.
"""

from __future__ import annotations

from pathlib import Path

import av

from ..errors import DecodeError

__all__ = ["ALLOWED_FORMATS", "open_input", "open_video", "NotAllowedFormat"]

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
    """The file's container and first video stream, for decoding; DecodeError says why not."""
    try:
        container = open_input(path)
    except NotAllowedFormat as e:
        raise DecodeError(f"cannot open: {e}") from e
    except av.FFmpegError as e:
        raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
    except OSError as e:
        raise DecodeError(f"cannot open: {e.strerror or e}") from e
    if not container.streams.video:
        container.close()
        raise DecodeError("no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise DecodeError("unsupported video codec: this FFmpeg build has no decoder for it")
    return container, stream
