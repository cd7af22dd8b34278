"""Plan before work: estimate each file's frames, split long files at key frames, largest first.

The seed's bulk mode stalled at 1.55x with 8 workers because one long file bounded the
run. Here every file whose work exceeds its fair share (total / (workers x SPLIT_FACTOR))
is cut at key frames into segments of about that share; the segments of all files are
queued longest first (LPT), so no single file can bound the makespan. Key frames and
frame times come from one demux pass (no decoding); for a split file the frames to infer
are chosen once from those times, so every frame is inferred exactly once whatever the
segment boundaries, B-frames or variable frame rate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

import av

from .decode import Sampling
from .decode.container import NotAllowedFormat
from .decode.layout import Layout, read_layout
from .decode.sampling import select
from .defaults import KEYFRAME_INTERVAL_FRAMES, SPLIT_FACTOR
from .discovery import Candidate
from .partials import PARTIAL_OTHER_FRAMES, Kept

# The work of a video whose frame count is unknown, sampled by a grid finer than any frame rate:
# a bound for ordering and splitting only (an hour at 1,000 frames/s), never a count of results.
_UNKNOWN_CAP = 3_600_000


@dataclass(frozen=True)
class Segment:
    file_id: int
    seg_id: int
    start: int  # first frame index (a key frame)
    end: int  # one past the last frame index
    seek_pts: int  # pts of the key frame to seek to
    work: int  # frames to infer in [start, end)


@dataclass(frozen=True)
class FilePlan:
    file_id: int
    candidate: Candidate
    work: int  # estimated frames to infer
    segments: tuple[Segment, ...] = ()  # empty: decoded whole, without a layout pass
    selected: tuple[int, ...] = ()  # split files: the frame indices to infer, ascending
    layout: Layout | None = None  # split files: from the planning demux pass
    kept: Kept | None = None  # a partial output it continues (its segments start at a key frame inside it)
    keep: int = 0  # frames of ``kept`` copied as they are; those after are inferred again and compared

    @property
    def split(self) -> bool:
        return bool(self.segments)

    @property
    def kept_frames(self) -> int:
        """Frames its output takes from the partial it continues (the prefix's, the kept segments')."""
        return self.keep + sum(len(s.frames) for s in self.kept.segments) if self.kept is not None else 0


def estimated_work(candidate: Candidate, sampling: Sampling) -> int:
    """Frames to infer, from container metadata only. A grid finer than the frames (``--fps``
    above the video's rate) infers each frame at most once: its work is the frames'."""
    if sampling.fps is not None:
        if not candidate.duration_s:
            return 0
        points = candidate.duration_s * sampling.fps
        cap = candidate.frames or _UNKNOWN_CAP
        return math.floor(points) + 1 if points <= cap else cap
    if sampling.keyframes:
        return max(1, candidate.frames // KEYFRAME_INTERVAL_FRAMES)  # unknown without a demux pass
    return math.ceil(candidate.frames / sampling.every)


def selected_indices(layout: Layout, sampling: Sampling) -> list[int]:
    """The frames the sampling picks, computed from packet times as the decoder would see them."""
    if sampling.keyframes:
        return list(layout.key_indices)
    frames = ((i, layout.t(i), None) for i in range(len(layout.pts)))
    return [i for i, _, _ in select(frames, sampling)]


def plan(candidates: list[Candidate], sampling: Sampling, *, workers: int, split: bool) -> list[FilePlan]:
    """Every candidate's plan, each done from its first frame."""
    return plan_continuing(candidates, sampling, workers=workers, split=split)[0]


def plan_continuing(candidates: list[Candidate], sampling: Sampling, *, workers: int, split: bool,
                    partials: Mapping[str, Kept] | None = None) -> tuple[list[FilePlan], dict[str, str]]:
    """Every candidate's plan; those with a partial in ``partials`` (by rel) continue it where
    they can. Also, per rel, why a partial could not be continued (the video is done whole)."""
    partials = partials or {}
    works = [estimated_work(c, sampling) for c in candidates]
    share = sum(works) / (workers * SPLIT_FACTOR) if workers > 1 and split else math.inf
    plans: list[FilePlan] = []
    refused: dict[str, str] = {}
    for file_id, (c, work) in enumerate(zip(candidates, works)):
        kept = partials.get(c.rel)
        continued = _continue(file_id, c, sampling, share, kept) if kept is not None else None
        if isinstance(continued, FilePlan):
            plans.append(continued)
            continue
        if continued is not None:
            refused[c.rel] = continued
        if split and work > share:
            plans.append(_split(file_id, c, work, sampling, share))
        else:
            plans.append(FilePlan(file_id, c, work))
    return plans, refused


def _continue(file_id: int, c: Candidate, sampling: Sampling, share: float, kept: Kept) -> FilePlan | str | None:
    """A plan that continues ``kept``: from the last key frame at or before its prefix's last
    frame, in segments as a split file's, around the complete segments it keeps; else why not
    (None: nothing to keep)."""
    try:
        layout = read_layout(c.path)
    except (av.FFmpegError, OSError, IndexError, NotAllowedFormat):
        return None  # decoding will report what is wrong with it
    if not layout.timed or not layout.key_indices:
        return None  # no timestamps to place the frames by: decoded whole, as it would be split
    selected = selected_indices(layout, sampling)
    if tuple(selected[: len(kept.frames)]) != kept.frames:
        return PARTIAL_OTHER_FRAMES
    ends = {*layout.key_indices, len(layout.pts)}
    last = kept.frames[-1]
    held: list[tuple[int, int]] = []
    for seg in kept.segments:  # complete segments after the prefix, each from a key frame to one
        lo, hi = bisect.bisect_left(selected, seg.start), bisect.bisect_left(selected, seg.end)
        if (seg.start <= max([last, *(b - 1 for _, b in held)]) or seg.start not in layout.key_indices
                or seg.end not in ends or tuple(selected[lo:hi]) != seg.frames):
            return PARTIAL_OTHER_FRAMES
        held.append((seg.start, seg.end))
    keys = [k for k in layout.key_indices if k <= last]
    start = keys[-1] if keys and keys[-1] != layout.key_indices[0] else 0  # frames before the first key: from 0
    keep = bisect.bisect_left(selected, start)
    if keep == 0 and not held:
        return None
    segments: list[Segment] = []
    for a, b in zip([start, *(end for _, end in held)], [*(begin for begin, _ in held), len(layout.pts)]):
        if a < b:
            segments += _segments(file_id, layout, selected, share, a, b, len(segments))
    work = len(selected) - keep - sum(len(k.frames) for k in kept.segments)
    return FilePlan(file_id, c, work, tuple(segments), tuple(selected), layout, kept, keep)


def _segments(file_id: int, layout: Layout, selected: list[int], share: float, start: int, stop: int,
              first_id: int = 0) -> list[Segment]:
    """Segments of the frames [start, stop) (``start`` 0 or a key frame, ``stop`` a key frame or
    the end), each at least ``share`` frames to infer but the last; ids from ``first_id``. Frames
    before the first key frame go with it (decoded from it)."""
    segments: list[Segment] = []
    first_key = layout.key_indices[0]
    seek = layout.pts[max(start, first_key)]
    bounds = [k for k in layout.key_indices if max(start, first_key) < k < stop] + [stop]
    picked = pos = bisect.bisect_left(selected, start)
    for nxt in bounds:  # the end of each GOP
        while pos < len(selected) and selected[pos] < nxt:
            pos += 1
        if pos - picked >= share or nxt == stop:
            segments.append(Segment(file_id, first_id + len(segments), start, nxt, seek, pos - picked))
            start, picked = nxt, pos
            seek = layout.pts[start] if start < len(layout.pts) else seek
    return segments


def _split(file_id: int, c: Candidate, work: int, sampling: Sampling, share: float) -> FilePlan:
    try:
        layout = read_layout(c.path)
    except (av.FFmpegError, OSError, IndexError, NotAllowedFormat):
        return FilePlan(file_id, c, work)  # decoding will report what is wrong with it
    if len(layout.key_indices) < 2 or not layout.timed:
        # One key frame: nowhere to cut. No timestamps (a raw .h264): no pts to place a
        # segment's frames by, so the file is decoded whole.
        return FilePlan(file_id, c, work)
    selected = selected_indices(layout, sampling)
    segments = _segments(file_id, layout, selected, share, 0, len(layout.pts))
    if len(segments) < 2:
        return FilePlan(file_id, c, work)
    return FilePlan(file_id, c, len(selected), tuple(segments), tuple(selected), layout)


def lpt_order(plans: list[FilePlan]) -> list[tuple[FilePlan, Segment | None]]:
    """Every unit of work (a whole file or one segment), longest first; ties in path order."""
    units: list[tuple[FilePlan, Segment | None]] = []
    for p in plans:
        if p.split:
            units.extend((p, s) for s in p.segments)
        else:
            units.append((p, None))
    return sorted(units, key=lambda u: (-(u[1].work if u[1] else u[0].work), u[0].candidate.rel,
                                        u[1].seg_id if u[1] else 0))
