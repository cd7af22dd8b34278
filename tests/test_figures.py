"""The run's own figures: what each means, an ETA only from steady measured throughput, and the
letterbox each video got. Time is fed to the meter, never waited for."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from client import bulk
from client.progress import Progress
from client.rate import RateMeter

from .videos import write_video


class Timeline:
    """A clock the test moves: results arrive when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def deliver(progress: Progress, clock: Timeline, *, fps: float, seconds: float, batch: int = 8) -> None:
    """Results at ``fps`` for ``seconds``, a batch at a time (a batch's frames arrive together)."""
    end = clock.now + seconds
    while clock.now + batch / fps <= end + 1e-9:
        clock.now += batch / fps
        for _ in range(batch):
            progress.frame()


def eta(progress: Progress) -> float | None:
    """The ETA the line shows, in seconds (``42 s``, ``3 min 05 s``)."""
    m = re.search(r"ETA (?:(\d+) min )?(\d+) s", progress.line())
    return 60 * float(m[1] or 0) + float(m[2]) if m else None


def test_a_slow_start_gives_no_eta_and_steady_throughput_gives_the_right_one() -> None:
    clock = Timeline()
    progress = Progress(files=4, frames_estimate=3000, live=False, clock=clock)
    clock.now += 6.0  # model warm-up and the first batch filling: no result for 6 s
    deliver(progress, clock, fps=30, seconds=0.5)
    # frames / elapsed since the start would say 16 frames in 6.5 s: 2.5 frames/s, an ETA of ~1,200 s.
    assert eta(progress) is None and "ETA once the rate is steady" in progress.line()
    deliver(progress, clock, fps=30, seconds=4.0)  # once steady, a change of pace moves it (tests/test_progress.py)
    remaining = (3000 - progress.frames) / 30
    assert eta(progress) == pytest.approx(remaining, rel=0.1)
    assert "30.0 frames/s over the last 10 s" in progress.line()


def test_a_slow_run_of_few_batches_gets_its_eta_once_enough_batches_arrived() -> None:
    meter = RateMeter(window_s=10.0, min_span_s=3.0, tolerance=0.2, min_events=8)
    t, frames = 0.0, 0
    for n in range(12):  # one batch of 8 every 4 s: 2 frames/s
        t, frames = t + 4.0, frames + 8
        meter.add(t, frames)
        reading = meter.reading()
        if n < 7:
            assert not reading.steady  # too few arrivals to judge, whatever the window
    assert reading.steady and reading.fps == pytest.approx(2.0) and reading.eta_s(100) == pytest.approx(50.0)


def test_the_table_gives_each_file_its_share_and_letterbox_and_the_run_its_rate(
        tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    src, out = tmp_path / "v", tmp_path / "out"
    src.mkdir()
    write_video(src / "wide.mp4", frames=9, size_wh=(320, 180))
    write_video(src / "tall.mp4", frames=3, size_wh=(96, 160))
    write_video(src / "also wide.mp4", frames=6, size_wh=(320, 180))
    with caplog.at_level(logging.INFO, logger="client.bulk"):
        rc = bulk.main([str(src), "--out", str(out), "--model", str(model_path), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    err = capsys.readouterr().err
    header = next(line for line in err.splitlines() if line.startswith("file "))
    assert header.split() == ["file", "status", "frames", "share", "letterbox", "note"]  # no per-file "fps"
    rows = {line[:14].strip(): line[14:].split() for line in err.splitlines()
            if line[:14].strip() in ("wide.mp4", "tall.mp4", "also wide.mp4")}
    assert {name: (r[1], r[2], r[3]) for name, r in rows.items()} == {
        "wide.mp4": ("9", "50.0%", "320x192"), "also wide.mp4": ("6", "33.3%", "320x192"),
        "tall.mp4": ("3", "16.7%", "192x320")}
    for f in summary["files"]:
        meta = json.loads((out / f"{f['path']}.meta.json").read_text())
        assert f["letterbox"] == meta["letterbox"]["shape"] == rows[f["path"]][3]
    assert sum(f["share"] for f in summary["files"]) == pytest.approx(1.0, abs=1e-3)
    t = summary["totals"]
    assert f"the run: 18 frames in {t['wall_seconds']:.1f} s = {t['fps']:.1f} frames/s" in err
    assert "letterbox (model input, W x H; batches hold one shape): 192x320 (1 video), 320x192 (2 videos)" in err
    assert "the run's rate is the only throughput" in err
    first = next(m for m in caplog.messages if m.startswith("progress: "))  # shown at the first result
    assert first == "progress: files: 0 ok, 0 failed, 3 to do; frames: 1 of 18 (6%); rate: measuring; " \
                    "ETA once the rate is steady"


def test_merged_shard_summaries_give_each_file_its_share_of_all_the_frames() -> None:
    from client.summary import merge

    def shard(files: dict[str, int]) -> dict:
        total = sum(files.values())
        return {"files": [{"path": p, "status": "ok", "frames": n, "share": n / total} for p, n in files.items()],
                "totals": {"files": len(files), "ok": len(files), "error": 0, "skipped": 0, "not_processed": 0,
                           "resumed": 0, "frames": total, "wall_seconds": 1.0, "fps": float(total)}}

    merged = merge({0: shard({"a.mp4": 30, "b.mp4": 10}), 1: shard({"c.mp4": 60})}, 2)
    assert {f["path"]: f["share"] for f in merged["files"]} == {"a.mp4": 0.3, "b.mp4": 0.1, "c.mp4": 0.6}
