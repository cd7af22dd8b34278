"""A video's frames from its packets alone: one demux pass, no decoding.

Both key-frame sampling and key-frame segments need each frame's presentation index and
which frames are key frames; packets carry both (pts and the key flag), so demuxing is
enough, at a small fraction of decoding's cost. Raw elementary streams (.h264, .mjpeg)
carry no pts (or pts FFmpeg made up from a default rate): their layout says so
(``untimed``), and they are neither split nor key-frame mapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .checks import has_timestamps
from .container import open_input


@dataclass(frozen=True)
class Layout:
    """Presentation-ordered pts of every frame, and the indices of the key frames."""

    pts: tuple[int, ...]
    key_indices: tuple[int, ...]
    time_base: Fraction
    start_pts: int
    untimed: int = 0  # packets without a pts: their frames' places are unknown without decoding

    def t(self, index: int) -> float:
        return float((self.pts[index] - self.start_pts) * self.time_base)

    @property
    def timed(self) -> bool:
        return not self.untimed


def demux_layout(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Layout:
    """Demux ``stream`` from where the container is now to its end."""
    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
    if not has_timestamps(container):  # FFmpeg's pts here, if any, come from a made-up rate
        return Layout((), (), Fraction(stream.time_base), 0, untimed=len(packets))
    timed = [(pts, key) for pts, key in packets if pts is not None]
    pts = sorted(p for p, _ in timed)
    order = {p: i for i, p in enumerate(pts)}
    keys = sorted({order[p] for p, key in timed if key})
    return Layout(tuple(pts), tuple(keys), Fraction(stream.time_base), stream.start_time or 0,
                  untimed=len(packets) - len(timed))


def read_layout(path: Path) -> Layout:
    with open_input(path) as container:
        return demux_layout(container, container.streams.video[0])
