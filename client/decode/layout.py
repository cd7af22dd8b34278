"""A video's frames from its packets alone: one demux pass, no decoding.

Both key-frame sampling and key-frame segments need each frame's presentation index and
which frames are key frames; packets carry both (pts and the key flag), so demuxing is
enough, at a small fraction of decoding's cost. Raw elementary streams (.h264, .mjpeg)
carry no pts (or pts FFmpeg made up from a default rate), and AVI's pts are in decode
order: their layout says so (``untimed``), and they are neither split nor key-frame mapped.
Packets an MP4 edit list discards are no frames of the video: counted, not placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .checks import has_timestamps
from .container import open_input, video_stream


@dataclass(frozen=True)
class Layout:
    """Presentation-ordered pts of every frame, and the indices of the key frames."""

    pts: tuple[int, ...]
    key_indices: tuple[int, ...]
    time_base: Fraction
    start_pts: int
    untimed: int = 0  # packets without a pts: their frames' places are unknown without decoding
    discarded: int = 0  # packets an edit list cuts away (FFmpeg decodes them only to reach the first frame shown)

    def t(self, index: int) -> float:
        return float((self.pts[index] - self.start_pts) * self.time_base)

    @property
    def timed(self) -> bool:
        return not self.untimed


def demux_layout(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Layout:
    """Demux ``stream`` from where the container is now to its end."""
    packets, discarded = [], 0
    for p in container.demux(stream):
        if p.size and p.is_discard:
            discarded += 1  # never shown: no frame of the file (an MP4 cut without re-encoding)
        elif p.size:
            packets.append((p.pts, p.is_keyframe))
    if not has_timestamps(container):  # FFmpeg's pts here, if any, are made up or in decode order
        return Layout((), (), Fraction(stream.time_base), 0, untimed=len(packets), discarded=discarded)
    timed = [(pts, key) for pts, key in packets if pts is not None]
    pts = sorted(p for p, _ in timed)
    if len(set(pts)) < len(pts):  # two packets with one pts (a faulty muxer): a pts places no frame
        return Layout((), (), Fraction(stream.time_base), 0, untimed=len(packets), discarded=discarded)
    order = {p: i for i, p in enumerate(pts)}
    keys = sorted({order[p] for p, key in timed if key})
    return Layout(tuple(pts), tuple(keys), Fraction(stream.time_base), stream.start_time or 0,
                  untimed=len(packets) - len(timed), discarded=discarded)


def read_layout(path: Path) -> Layout:
    with open_input(path) as container:
        stream = video_stream(container)
        if stream is None:
            raise IndexError("no video stream")  # as streams.video[0] raised: the planner decodes it whole
        return demux_layout(container, stream)
