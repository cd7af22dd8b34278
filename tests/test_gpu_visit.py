"""The GPU visit's own arithmetic and clips, checked here: dmon's columns, the steady rate's
window, the High-profile clips (CABAC, deblocking) and their extension by repetition."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from benchmarks.gpu_visit import dmon_means, long_clips, make_high_profile_clip, steady_rate, x264_settings
from tests.videos import write_video

DMON = """# gpu     sm    mem    enc    dec    jpg    ofa
# Idx      %      %      %      %      %      %
    0     10      2      0     40      0      0
    0     30      4      0     80      0      0
    0      -      -      -      -      -      -
"""


def test_dmon_means_read_sm_and_dec_by_their_column_names() -> None:
    assert dmon_means(DMON) == {"sm": 20.0, "dec": 60.0}
    assert dmon_means("") == {"sm": None, "dec": None}


def test_the_steady_rate_leaves_out_the_warm_up_and_the_drain() -> None:
    # 5 s of start-up at nothing, then 100 frames/s, then a slow tail
    samples = [(t, 0.0) for t in range(5)] + [(5 + t, 100.0 * t) for t in range(1, 10)] + [(20, 950.0), (30, 1000.0)]
    assert steady_rate(samples, 1000) == pytest.approx(100.0)
    assert steady_rate([(0, 0.0), (1, 1000.0)], 1000) is None, "no two samples inside: no steady figure"


def test_high_profile_clips_have_cabac_and_deblocking_and_ultrafast_ones_are_refused(tmp_path: Path) -> None:
    clip = make_high_profile_clip(tmp_path, frames=30, size_wh=(192, 108))
    settings = x264_settings(clip)
    assert "cabac=1" in settings and "deblock=1" in settings and "bframes=2" in settings
    with av.open(str(clip)) as f:
        assert f.streams.video[0].codec_context.profile == "High"
    flat = write_video(tmp_path / "flat.mp4", frames=4, size_wh=(192, 108))
    assert "cabac=0" in x264_settings(flat), "ultrafast: no CABAC (why the visit does not use it)"
    with pytest.raises(RuntimeError, match="not CABAC"):
        make_high_profile_clip(tmp_path, frames=4, size_wh=(192, 108), preset="ultrafast")


def test_long_clips_repeat_whole_copies_of_the_clip_and_decode_completely(tmp_path: Path) -> None:
    base = make_high_profile_clip(tmp_path / "base", frames=30, size_wh=(192, 108))
    folder = long_clips(tmp_path / "long", base, files=2, frames_each=100)
    clips = sorted(folder.glob("*.mp4"))
    assert len(clips) == 2
    for clip in clips:
        with av.open(str(clip)) as f:
            pts = [frame.pts for frame in f.decode(video=0)]
        assert len(pts) == 90, "a whole number of 30-frame copies, never a cut GOP"
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
