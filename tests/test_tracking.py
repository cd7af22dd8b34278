"""Tracking on generated streams of detections whose identities are known.

Each scene is a list of objects moving on straight lines; the detections of a frame are their
boxes (in a shuffled order, as a detector gives them). An id "stays with its object" when, once
the object's track is confirmed, every later detection of it carries the same id and no two
objects share one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trackers", reason="needs the track extra: pip install 'framestream[track]'")

from client.detections import Detections  # noqa: E402
from client.tracking import NO_TRACK, TrackOptions, VideoTracker  # noqa: E402

from .square_detector import squares_frame  # noqa: E402
from .videos import write_video  # noqa: E402


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


def test_a_sampled_run_keeps_each_object_s_id_across_its_regular_gaps() -> None:
    """--every 5 on 30 frames/s: a frame each 1/6 s, objects moving 20 px between updates.
    (Regular gaps pass counted or timed alike; the irregular test below needs the times.)"""
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


# -- end to end: client.bulk --track on videos whose objects the test knows --------------------

ROOT = Path(__file__).resolve().parents[1]
CROSSING = {0: [(8 + 5 * i, 30, 20) for i in range(48)], 1: [(230 - 5 * i, 40, 20) for i in range(48)]}


def crossing_video(path: Path, *, gop: int = 48) -> Path:
    """A red square moving right and a green one moving left; they overlap near frame 22."""
    return write_video(path, frames=48, size_wh=(256, 96), fps=24, gop=gop,
                       image=lambda i, w, h: squares_frame(CROSSING, i, w, h))


def bulk_with_squares(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.square_detector", "--", *args, "--no-progress",
                           "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300)


def ids_by_class(rows: list[dict]) -> dict[int, list[int]]:
    by_class: dict[int, list[int]] = {}
    for row in rows:
        for det in row["detections"]:
            assert len(det) == 7, det  # x1, y1, x2, y2, score, class_id, track_id
            by_class.setdefault(int(det[5]), []).append(int(det[6]))
    return by_class


@pytest.mark.parametrize("extra", [(), ("--every", "2"), ("--workers", "2")])
def test_bulk_track_keeps_each_square_s_id_through_the_crossing(tmp_path: Path, extra: tuple[str, ...]) -> None:
    src = tmp_path / "v"
    src.mkdir()
    crossing_video(src / "cross.mp4", gop=8 if "--workers" in extra else 48)
    done = bulk_with_squares(str(src), "--out", str(tmp_path / "out"), "--track", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    if "--workers" in extra:
        assert "into" in done.stderr and "segments" in done.stderr, "the video was split: tracks cross segments"
    rows = [json.loads(line) for line in (tmp_path / "out" / "cross.mp4.jsonl").read_text().splitlines()]
    by_class = ids_by_class(rows)
    settled = {cls: set(ids[2:]) for cls, ids in by_class.items()}  # a track is confirmed over 2 frames
    assert sorted(by_class) == [0, 1] and all(len(ids) == 1 for ids in settled.values()), settled
    assert settled[0] != settled[1] and NO_TRACK not in settled[0] | settled[1]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["track"] == "bytetrack"


def test_parquet_has_the_jsonl_s_track_ids_and_a_run_without_track_has_none(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "v"
    src.mkdir()
    crossing_video(src / "cross.mp4")
    for fmt in ("jsonl", "parquet"):
        done = bulk_with_squares(str(src), "--out", str(tmp_path / fmt), "--track", "--format", fmt)
        assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "jsonl" / "cross.mp4.jsonl").read_text().splitlines()]
    expected = [(r["frame"], int(d[5]), int(d[6])) for r in rows for d in r["detections"]]
    table = pq.read_table(tmp_path / "parquet" / "detections").to_pylist()
    assert sorted((r["frame"], r["class_id"], r["track_id"]) for r in table) == sorted(expected)
    plain = bulk_with_squares(str(src), "--out", str(tmp_path / "plain"), "--format", "parquet")
    assert plain.returncode == 0
    assert {r["track_id"] for r in pq.read_table(tmp_path / "plain" / "detections").to_pylist()} == {None}


def test_a_rerun_with_track_redoes_a_run_made_without_it(tmp_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    crossing_video(src / "cross.mp4")
    out = tmp_path / "out"
    assert bulk_with_squares(str(src), "--out", str(out)).returncode == 0
    again = bulk_with_squares(str(src), "--out", str(out), "--track")
    assert again.returncode == 0 and "the options changed" in again.stderr
    first = json.loads((out / "cross.mp4.jsonl").read_text().splitlines()[5])
    assert all(len(d) == 7 for d in first["detections"])


def test_track_without_the_trackers_library_is_one_line_saying_what_to_install(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    crossing_video(src / "cross.mp4")
    blocked = ("import sys; sys.modules['trackers'] = None\n"
               "from client import bulk; sys.exit(bulk.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", blocked, str(src), "--out", str(tmp_path / "out"), "--model",
                           str(model_path), "--track", "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "pip install 'framestream[track]'" in errors[0]
    assert not (tmp_path / "out" / "cross.mp4.jsonl").exists()
