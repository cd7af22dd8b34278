"""Frame selection over a stream of (index, t, payload) without decoding anything twice."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from . import Sampling

T = TypeVar("T")


def select(frames: Iterable[tuple[int, float, T]], sampling: Sampling) -> Iterator[tuple[int, float, T]]:
    """Keep the frames ``sampling`` asks for, in order, each at most once."""
    if sampling.fps is not None:
        yield from _nearest_to_grid(frames, sampling.fps)
    elif sampling.every > 1:
        yield from (f for f in frames if f[0] % sampling.every == 0)
    else:
        yield from frames


def _nearest_to_grid(frames: Iterable[tuple[int, float, T]], fps: float) -> Iterator[tuple[int, float, T]]:
    """For each grid point k/fps up to the last frame's time, the nearest frame (earlier on a tie).

    Streams with one frame of look-ahead: a grid point between two frames is decided once
    the later one is seen.
    """
    k = 0
    prev: tuple[int, float, T] | None = None
    last_emitted = -1
    for item in frames:
        t = item[1]
        while k / fps <= t:
            g = k / fps
            chosen = prev if prev is not None and abs(prev[1] - g) <= abs(t - g) else item
            if chosen[0] != last_emitted:
                last_emitted = chosen[0]
                yield chosen
            k += 1
        prev = item
