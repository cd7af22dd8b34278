"""Test videos generated with PyAV: small, varied, and with content the model responds to."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_image(i: int, w: int, h: int) -> np.ndarray:
    """Coloured blocks that drift with ``i``: structured content, different every frame."""
    rng = np.random.default_rng(1234)
    blocks = rng.integers(0, 255, (h // 24 + 3, w // 24 + 3, 3))
    img = np.kron(blocks, np.ones((24, 24, 1)))
    dx, dy = (3 * i) % 24, (2 * i) % 24
    return np.ascontiguousarray(img[dy : dy + h, dx : dx + w]).astype(np.uint8)


def write_video(
    path: Path,
    *,
    frames: int = 12,
    size_wh: tuple[int, int] = (160, 96),
    fps: int = 12,
    codec: str = "libx264",
    gop: int = 12,
    bframes: int = 0,
    rotation: int = 0,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    colour: tuple[int, int] | None = None,
    pix_fmt: str = "yuv420p",
    faststart: bool = False,
    image=frame_image,
) -> Path:
    """Write ``frames`` frames; ``pts`` (in ``time_base`` units) makes the frame rate variable;
    ``colour`` tags the stream with FFmpeg's (colorspace, color_range) values; ``faststart``
    puts an MP4's index first (so a truncated copy still opens and declares its length);
    ``image(i, w, h)`` draws frame ``i`` (RGB uint8)."""
    w, h = size_wh
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt
        if colour is not None:
            stream.codec_context.colorspace, stream.codec_context.color_range = colour
        if codec == "libx264":
            stream.options = {"g": str(gop), "bf": str(bframes), "preset": "ultrafast", "sc_threshold": "0"}
            if gop > 1:
                stream.options["keyint_min"] = str(gop)
        else:
            stream.codec_context.gop_size = gop
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(image(i, w, h), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_raw_stream(path: Path, *, fmt: str = "h264", **video) -> Path:
    """A raw elementary stream (no container, no timestamps): ``write_video``'s packets
    remuxed into FFmpeg's ``fmt`` muxer (h264, hevc)."""
    tmp = write_video(path.with_suffix(".tmp.mp4"), **video)
    with av.open(str(tmp)) as src, av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    tmp.unlink()
    return path


def write_mjpeg_stream(path: Path, *, frames: int = 6, size_wh: tuple[int, int] = (160, 96)) -> Path:
    """Raw Motion JPEG: no timestamps and no frame rate anywhere in the stream."""
    w, h = size_wh
    with av.open(str(path), "w", format="mjpeg") as out:
        stream = out.add_stream("mjpeg", rate=12)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuvj420p"
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        t = np.arange(samples) / 16000
        data = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(data[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_unknown_codec(path: Path) -> Path:
    """A Matroska file whose video codec ID no FFmpeg knows (same length, so the file stays valid)."""
    mkv = write_video(path.with_suffix(".tmp.mkv"), frames=3)
    data = mkv.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_FRAMESTREAM00", 1)
    mkv.unlink()
    path.write_bytes(data)
    return path
