"""Planning: key-frame segments cover every frame exactly once; split runs equal unsplit runs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from client.decode import FrameRange, Sampling
from client.decode.pyav_source import PyAVSource
from client.discovery import discover
from client.letterbox import plan_letterbox
from client.schedule import FilePlan, Segment, lpt_order, plan, read_layout

from .test_bulk import bulk_main, entries, read_jsonl
from .test_triton import assert_same_detections
from .videos import write_video

VFR_PTS = [0, 40, 80, 400, 440, 1000, 1010, 1600, 1640, 1700, 2400, 2440, 2480, 3000, 3100, 3200]


def segments_of(path: Path, sampling: Sampling = Sampling(), workers: int = 8) -> FilePlan:
    (c,) = discover(path.parent).videos
    (p,) = plan([c], sampling, workers=workers, split=True)
    return p


def decode_range(path: Path, p: FilePlan, seg: Segment) -> list[int]:
    index_of_pts = {pts: i for i, pts in enumerate(p.layout.pts)}
    r = FrameRange(seg.start, seg.end, seg.seek_pts, frozenset(p.selected), index_of_pts, expected=seg.work)
    with PyAVSource(path, frame_range=r) as src:
        return [f.index for f in src.frames(lambda hw: plan_letterbox(hw, (320, 320), minimal=True))]


@pytest.mark.parametrize(
    ("name", "kwargs", "keyframes"),
    [
        ("gop1.mp4", dict(frames=24, gop=1), 24),
        ("gop12_bframes.mp4", dict(frames=60, gop=12, bframes=3), 5),
        ("gop250.mp4", dict(frames=300, gop=250, bframes=2), 2),
        ("vfr.mp4", dict(frames=len(VFR_PTS), gop=4, pts=VFR_PTS, time_base=Fraction(1, 1000)), 4),
    ],
)
def test_segments_cover_every_frame_once_and_each_decodes_exactly_its_range(tmp_path: Path, name, kwargs, keyframes) -> None:
    (tmp_path / "v").mkdir()
    path = write_video(tmp_path / "v" / name, **kwargs)
    p = segments_of(path)
    n = kwargs["frames"]
    assert len(p.layout.key_indices) == keyframes
    assert p.split and len(p.segments) >= 2
    assert p.segments[0].start == 0 and p.segments[-1].end == n
    assert all(a.end == b.start for a, b in zip(p.segments, p.segments[1:])), "contiguous, no overlap"
    assert all(s.start in p.layout.key_indices for s in p.segments), "every segment starts at a key frame"
    decoded = [i for seg in p.segments for i in decode_range(path, p, seg)]
    assert decoded == list(range(n))


def test_fps_sampling_is_decided_once_per_file_so_segments_never_repeat_or_drop_a_grid_point(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    path = write_video(tmp_path / "v" / "vfr.mp4", frames=len(VFR_PTS), gop=4, pts=VFR_PTS, time_base=Fraction(1, 1000))
    sampling = Sampling(fps=2)
    p = segments_of(path, sampling)
    with PyAVSource(path, sampling=sampling) as src:
        whole = [f.index for f in src.frames(lambda hw: plan_letterbox(hw, (320, 320), minimal=True))]
    assert list(p.selected) == whole
    assert [i for seg in p.segments for i in decode_range(path, p, seg)] == whole


def test_a_file_with_a_single_key_frame_is_never_split(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    path = write_video(tmp_path / "v" / "one_gop.mp4", frames=80, gop=250)
    assert not segments_of(path).split


def test_small_files_are_not_split_and_units_run_longest_first(tmp_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "long.mp4", frames=120, gop=10)
    write_video(src / "mid.mp4", frames=20, gop=10)
    write_video(src / "short.mp4", frames=8, gop=10)
    plans = plan(discover(src).videos, Sampling(), workers=4, split=True)
    by_name = {p.candidate.rel: p for p in plans}
    assert by_name["long.mp4"].split and not by_name["mid.mp4"].split and not by_name["short.mp4"].split
    works = [(s.work if s else p.work) for p, s in lpt_order(plans)]
    assert works == sorted(works, reverse=True)
    assert sum(works) == 148
    assert not any(p.split for p in plan(discover(src).videos, Sampling(), workers=4, split=False))


@pytest.mark.parametrize("sampling", [[], ["--fps", "5"], ["--every", "3"]])
def test_segmented_and_unsegmented_runs_write_the_same_outputs(tmp_path: Path, model_path: Path, sampling) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "long.mp4", frames=72, gop=12, bframes=2)
    write_video(src / "vfr.mp4", frames=len(VFR_PTS), gop=4, pts=VFR_PTS, time_base=Fraction(1, 1000))
    write_video(src / "short.mp4", frames=6)
    rc, split = bulk_main(src, tmp_path / "split", model_path, "--workers", "3", *sampling)
    assert rc == 0
    assert split["schedule"]["segments"] > 3, "the long file must have been split"
    assert len(entries(split)["long.mp4"]["segments"]) > 1
    rc, whole = bulk_main(src, tmp_path / "whole", model_path, "--workers", "3", "--no-split", *sampling)
    assert rc == 0 and whole["schedule"]["segments"] == 3
    assert_same_detections(tmp_path / "whole", tmp_path / "split")
    frames = [r["frame"] for r in read_jsonl(tmp_path / "split" / "long.mp4.jsonl")]
    assert frames == sorted(set(frames))
    schedule = split["schedule"]
    assert 0 < schedule["lower_bound_s"] <= schedule["makespan_s"] + 1e-6
    assert 0 < schedule["efficiency"] <= 1.0 and 0 < schedule["busy_fraction"] <= 1.0


def test_read_layout_orders_pts_and_marks_key_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "b.mp4", frames=30, gop=10, bframes=2)
    layout = read_layout(path)
    assert list(layout.pts) == sorted(layout.pts) and len(layout.pts) == 30
    assert layout.key_indices == (0, 10, 20)
    assert layout.t(10) == pytest.approx(10 / 12)
