"""Test videos generated with PyAV: small, varied, and with content the model responds to."""

from __future__ import annotations

import math
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
    preset: str = "ultrafast",
) -> Path:
    """Write ``frames`` frames; ``pts`` (in ``time_base`` units) makes the frame rate variable;
    ``colour`` tags the stream with FFmpeg's (colorspace, color_range) values; ``faststart``
    puts an MP4's index first (so a truncated copy still opens and declares its length);
    ``image(i, w, h)`` draws frame ``i`` (RGB uint8); ``preset``: x264's (ultrafast has no CABAC
    and no deblocking; the others are High profile with both)."""
    w, h = size_wh
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt
        if colour is not None:
            stream.codec_context.colorspace, stream.codec_context.color_range = colour
        if codec == "libx264":
            stream.options = {"g": str(gop), "bf": str(bframes), "preset": preset, "sc_threshold": "0"}
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


def write_with_audio(
    path: Path,
    *,
    frames: int = 48,
    size_wh: tuple[int, int] = (160, 96),
    fps: int = 12,
    codec: str = "libx264",
    gop: int = 12,
    bframes: int = 0,
    audio: str = "aac",
    options: dict[str, str] | None = None,
    sound_s: float | None = None,
) -> Path:
    """A video with a sound track beside it, as recorders write them (OBS's MKV, a browser's
    WebM, an RTMP dump's FLV, a camera's MPEG-TS): ``frames`` frames and a 440 Hz tone as
    long (``sound_s``: this many seconds of it, running on after the picture ends), interleaved;
    ``options`` go to the muxer (``{"live": "1"}``: Matroska as written live, with no duration
    anywhere; ``{"movflags": "faststart"}``: an MP4's index before its data)."""
    w, h = size_wh
    with av.open(str(path), "w", options=options or {}) as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            video.options = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "preset": "ultrafast",
                             "sc_threshold": "0"}
        else:
            video.codec_context.gop_size = gop
            video.codec_context.max_b_frames = bframes
        sound = out.add_stream(audio, rate=48000 if audio != "libmp3lame" else 44100)
        cc = sound.codec_context
        rate, size, fmt = cc.sample_rate, cc.frame_size or 1024, cc.format.name
        sent, ticks = 0, max(frames, math.ceil((sound_s or 0) * fps))
        for i in range(ticks):
            if i < frames:
                for packet in video.encode(av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")):
                    out.mux(packet)
            if i == frames - 1:
                for packet in video.encode():  # the picture ends here; any sound runs on after it
                    out.mux(packet)
            while sent < (i + 1) * rate / fps:
                tone = 0.2 * np.sin(2 * np.pi * 440 * (sent + np.arange(size)) / rate)
                data = tone.astype(np.float32) if fmt.startswith("flt") else (tone * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
                frame.sample_rate, frame.pts = rate, sent
                for packet in sound.encode(frame):
                    out.mux(packet)
                sent += size
        for packet in sound.encode():
            out.mux(packet)
    return path


def cut_short(path: Path, keep: float = 0.5, *, at_packet: bool = True) -> Path:
    """Truncate ``path`` in place, as a recording stopped short by a crash or a full disk:
    at the end of the packet nearest ``keep`` of its size (no half packet left to fail on,
    so only the container's declarations show what is missing), or, ``at_packet=False``,
    at exactly that fraction of its bytes (mid-packet)."""
    size = path.stat().st_size
    cut = int(keep * size)
    if at_packet:
        with av.open(str(path)) as c:
            ends = [p.pos + p.size for p in c.demux() if p.size and p.pos is not None and p.pos >= 0]
        cut = min(ends, key=lambda end: abs(end - keep * size))
    path.write_bytes(path.read_bytes()[:cut])
    return path


def write_cut_without_reencoding(path: Path, *, frames: int = 150, fps: int = 30, gop: int = 30,
                                 cut_at: int = 50) -> Path:
    """An MP4 cut at frame ``cut_at`` (not a key frame) without re-encoding, as
    ``ffmpeg -ss T -i in.mp4 -c copy`` cuts: the packets from the key frame before the cut
    are kept (they are needed to decode it) and an edit list tells players to show the
    video from the cut; FFmpeg flags the packets before it discard."""
    full = write_video(path.with_suffix(".full.mp4"), frames=frames, fps=fps, gop=gop)
    with av.open(str(full)) as src, av.open(str(path), "w") as out:
        s = src.streams.video[0]
        stream = out.add_stream_from_template(s)
        tick = round(1 / (s.time_base * fps))  # one frame in the stream's time base
        key = cut_at - cut_at % gop
        for packet in src.demux(s):
            if packet.size and packet.pts >= key * tick:
                packet.pts -= cut_at * tick
                packet.dts -= cut_at * tick
                packet.stream = stream
                out.mux(packet)
    full.unlink()
    return path


def write_still_first(path: Path, *, frames: int = 24, fps: int = 12, size_wh: tuple[int, int] = (160, 96)) -> Path:
    """A file whose first video stream is a still image (one JPEG: a cover or poster frame)
    and whose second is the video."""
    w, h = size_wh
    with av.open(str(path), "w") as out:
        still = out.add_stream("mjpeg", rate=1)
        still.width, still.height, still.pix_fmt = w, h, "yuvj420p"
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"g": "12", "bf": "0", "preset": "ultrafast"}
        for packet in [*still.encode(av.VideoFrame.from_ndarray(frame_image(99, w, h), format="rgb24")),
                       *still.encode()]:
            out.mux(packet)
        for i in range(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path
