"""Frame selection over a stream of (index, t, payload) without decoding anything twice."""

from __future__ import annotations

import math
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
    the later one is seen. The points between two frames choose the earlier frame, then the
    later one, so only the first and the last of them are looked at: the work is per frame,
    whatever the grid's rate (``--fps 1e9`` is every frame, at the cost of every frame).
    """
    k: int | None = 0  # the next grid point's index; None once the grid is finer than a float counts
    prev: tuple[int, float, T] | None = None
    last_emitted = -1
    for item in frames:
        t = item[1]
        after = _first_point_after(k, t, fps) if k is not None else None
        if after is None:  # points on every frame's own time: each frame is the nearest to one
            points = () if k is None else (k / fps, t)
        else:
            points = (k / fps, (after - 1) / fps) if after > k else ()
        for g in points:
            chosen = prev if prev is not None and abs(prev[1] - g) <= abs(t - g) else item
            if chosen[0] != last_emitted:
                last_emitted = chosen[0]
                yield chosen
        if k is None and item[0] != last_emitted:
            last_emitted = item[0]
            yield item
        k = None if after is None else max(k, after)
        prev = item


def _first_point_after(k: int, t: float, fps: float) -> int | None:
    """The first grid index from ``k`` on whose point k/fps lies after ``t`` (``k`` if none is at
    or before it; None if that index is past what a float holds). ``t * fps`` may be off by an
    ulp, so the guess is corrected by the test itself."""
    if k / fps > t:
        return k
    guess = t * fps
    if not guess < 2.0 ** 53:
        return None
    after = max(k + 1, math.floor(guess) + 1)
    for _ in range(3):
        if after - 1 > k and (after - 1) / fps > t:
            after -= 1
        elif after / fps <= t:
            after += 1
    return after
