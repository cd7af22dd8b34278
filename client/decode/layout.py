"""A video's frames from its packets alone: one demux pass, no decoding.

Both key-frame sampling and key-frame segments need each frame's presentation index and
which frames are key frames; packets carry both (pts and the key flag), so demuxing is
enough, at a small fraction of decoding's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av


@dataclass(frozen=True)
class Layout:
    """Presentation-ordered pts of every frame, and the indices of the key frames."""

    pts: tuple[int, ...]
    key_indices: tuple[int, ...]
    time_base: Fraction
    start_pts: int

    def t(self, index: int) -> float:
        return float((self.pts[index] - self.start_pts) * self.time_base)


def demux_layout(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Layout:
    """Demux ``stream`` from where the container is now to its end."""
    packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None and p.size]
    pts = sorted(p for p, _ in packets)
    order = {p: i for i, p in enumerate(pts)}
    keys = sorted({order[p] for p, key in packets if key})
    return Layout(tuple(pts), tuple(keys), Fraction(stream.time_base), stream.start_time or 0)


def read_layout(path: Path) -> Layout:
    with av.open(str(path)) as container:
        return demux_layout(container, container.streams.video[0])
