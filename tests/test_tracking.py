"""Tracking on generated streams of detections whose identities are known.

Each scene is a list of objects moving on straight lines; the detections of a frame are their
boxes (in a shuffled order, as a detector gives them). An id "stays with its object" when, once
the object's track is confirmed, every later detection of it carries the same id and no two
objects share one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("trackers", reason="needs the track extra: pip install 'framestream[track]'")

from client.detections import Detections  # noqa: E402
from client.tracking import NO_TRACK, TrackOptions, VideoTracker  # noqa: E402


@dataclass(frozen=True)
class Mover:
    start: tuple[float, float]  # box centre at t = 0, pixels
    velocity: tuple[float, float]  # pixels per second
    size: float = 40.0
    hidden: tuple[float, float] | None = None  # seconds [from, to) during which it is not detected

    def box(self, t: float) -> np.ndarray:
        cx, cy = self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t
        h = self.size / 2
        return np.array([cx - h, cy - h, cx + h, cy + h], np.float32)

    def seen(self, t: float) -> bool:
        return self.hidden is None or not self.hidden[0] <= t < self.hidden[1]


def track(movers: list[Mover], times: list[float], fps: float, tracker: str = "bytetrack",
          seed: int = 0) -> list[dict[int, int]]:
    """Per frame: {mover index: track id} for the movers detected in it."""
    rng = np.random.default_rng(seed)
    video = VideoTracker(TrackOptions(tracker), fps)
    frames = []
    for t in times:
        present = [i for i, m in enumerate(movers) if m.seen(t)]
        order = rng.permutation(len(present))
        who = [present[k] for k in order]
        det = Detections(np.stack([movers[i].box(t) for i in who]).reshape(-1, 4),
                         np.full(len(who), 0.9, np.float32), np.zeros(len(who), np.int32))
        ids = video.update(det, t)
        assert ids.dtype == np.int32 and ids.shape == (len(who),)
        frames.append({i: int(ids[k]) for k, i in enumerate(who)})
    return frames


def assert_ids_stay_with_their_objects(frames: list[dict[int, int]], movers: int, settle: int = 3,
                                       reconfirm: range = range(0)) -> None:
    """After ``settle`` frames (a track is confirmed over consecutive frames), each mover keeps
    one id, and the movers' ids differ. In ``reconfirm`` (frames after a gap) a tracker that
    re-confirms a recovered track (OC-SORT does, over its minimum_consecutive_frames) may show none."""
    ids: dict[int, set[int]] = {m: set() for m in range(movers)}
    for index, frame in enumerate(frames[settle:], start=settle):
        for m, tid in frame.items():
            if tid == NO_TRACK and index in reconfirm:
                continue
            assert tid != NO_TRACK, f"mover {m} lost its track at frame {index}, where it is seen: {frame}"
            ids[m].add(tid)
    assert all(len(v) == 1 for v in ids.values()), f"an object changed id: {ids}"
    assert len({next(iter(v)) for v in ids.values()}) == movers, f"two objects share an id: {ids}"


def test_two_objects_crossing_keep_their_ids() -> None:
    movers = [Mover((50, 200), (120, 0)), Mover((450, 200), (-120, 10))]  # they pass each other near t = 1.7 s
    times = [i / 30 for i in range(120)]
    assert_ids_stay_with_their_objects(track(movers, times, 30), 2)


@pytest.mark.parametrize("tracker", ["bytetrack", "sort", "ocsort"])
def test_an_object_hidden_for_a_few_frames_comes_back_with_its_id(tracker: str) -> None:
    movers = [Mover((50, 100), (90, 0), hidden=(1.0, 1.2)), Mover((50, 300), (60, 0))]
    times = [i / 30 for i in range(90)]
    frames = track(movers, times, 30, tracker)
    back = next(i for i, t in enumerate(times) if t >= 1.2)  # the first frame it is seen again
    before = {f[0] for f in frames[10:30]}
    after = {f[0] for f in frames[back + 3:]}
    assert len(before) == 1 and before == after, f"{tracker}: {before} before the gap, {after} after"
    assert_ids_stay_with_their_objects(frames, 2, settle=10, reconfirm=range(back, back + 3))


def test_a_sampled_run_tracks_by_the_frames_times_not_their_count() -> None:
    """--every 5 on 30 frames/s: a frame each 1/6 s, objects moving 20 px between updates; the
    tracker is told the real times, so its buffer and motion span the real gaps."""
    movers = [Mover((40, 100), (120, 0), size=60), Mover((40, 260), (100, 0), size=60)]
    times = [i * 5 / 30 for i in range(30)]
    assert_ids_stay_with_their_objects(track(movers, times, 30), 2)


def test_ids_follow_rows_the_detector_gave_in_any_order() -> None:
    movers = [Mover((60 + 90 * k, 60 + 40 * k), (30, 15)) for k in range(5)]
    times = [i / 30 for i in range(40)]
    for seed in (1, 2, 3):
        assert_ids_stay_with_their_objects(track(movers, times, 30, seed=seed), 5)


def test_an_empty_frame_and_an_unknown_tracker() -> None:
    video = VideoTracker(TrackOptions(), 25)
    assert video.update(Detections.empty(), 0.0).shape == (0,)
    from client.errors import UsageError

    with pytest.raises(UsageError, match="choose one of bytetrack, sort, ocsort"):
        VideoTracker(TrackOptions("deepsort"), 25)


def test_irregular_sampling_keeps_fast_objects_because_the_tracker_is_told_the_times() -> None:
    """Key frames of a variable GOP: gaps of 0.1 s and 0.6 s alternate. A 60 px object moving
    200 px/s shifts 120 px over a long gap, past any overlap with where it was; only motion
    predicted over the real gap finds it again."""
    movers = [Mover((40, 100), (200, 0), size=60), Mover((40, 300), (-0.0, 150), size=60)]
    gaps = [0.1, 0.6] * 8
    times = [0.0, *np.cumsum(gaps).tolist()]
    assert_ids_stay_with_their_objects(track(movers, times, 30), 2)
