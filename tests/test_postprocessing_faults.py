"""A failure in a step between inference and the output (``--track``, ``--classes``/``--conf``)
costs that video alone: it is an error saying which step failed, its frames so far are kept as
its partial output, the other videos complete and the run goes on. Real runs on real videos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client.bulk_run import RunOptions, run_bulk
from client.detections import Detections
from client.filters import DetectionFilter, FilteredSink
from client.infer.embedded import EmbeddedBackend
from client.pipeline import PipelineConfig
from client.resume import ResumeLedger
from client.sinks import make_sink

from .test_bulk import bulk_main, entries, read_jsonl
from .videos import write_video

LONG_FRAMES = 48  # 4 s at 12 fps


@pytest.fixture
def src(tmp_path: Path) -> Path:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "long.mp4", frames=LONG_FRAMES, size_wh=(160, 96), gop=12)
    write_video(src / "short1.mp4", frames=6, size_wh=(128, 96))
    write_video(src / "short2.mp4", frames=6, size_wh=(128, 96))
    return src


def test_a_tracker_that_fails_on_one_video_fails_that_video_alone_and_the_run_goes_on(
        src: Path, tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trackers = pytest.importorskip("trackers")
    update = trackers.ByteTrackTracker.update

    def breaks_after_two_seconds(self, detections, *args, timestamp=None, **kwargs):
        """ByteTrack itself, except that past 2 s of video (long.mp4 only) it raises."""
        if timestamp is not None and timestamp >= 2.0:
            raise ValueError(f"track state corrupt at t={timestamp:g}")
        return update(self, detections, *args, timestamp=timestamp, **kwargs)

    monkeypatch.setattr(trackers.ByteTrackTracker, "update", breaks_after_two_seconds)
    out = tmp_path / "out"
    rc, summary = bulk_main(src, out, model_path, "--track", "--workers", "2", "--no-split")
    assert rc == 2
    assert summary["stopped"] is None  # the run went on
    files = entries(summary)
    long = files["long.mp4"]
    assert long["status"] == "error"
    assert long["error"] == "post-processing failed: ValueError: track state corrupt at t=2"
    partial = read_jsonl(out / long["partial_output"])
    assert [r["frame"] for r in partial] == list(range(24))  # the frames before 2 s, tracked
    assert not (out / "long.mp4.jsonl").exists()
    for rel in ("short1.mp4", "short2.mp4"):
        assert files[rel]["status"] == "ok" and len(read_jsonl(out / f"{rel}.jsonl")) == 6

    monkeypatch.undo()  # the tracker fixed: a rerun redoes the failed video alone
    rc, again = bulk_main(src, out, model_path, "--track", "--workers", "2", "--no-split")
    assert rc == 0
    assert {p for p, f in entries(again).items() if f["resumed"]} == {"short1.mp4", "short2.mp4"}
    assert len(read_jsonl(out / "long.mp4.jsonl")) == LONG_FRAMES


@dataclass(frozen=True)
class _BreaksAtTheTenthFrame(DetectionFilter):
    """A filter a program passes to :class:`FilteredSink` (any object with ``apply``), with a
    bug that shows at the tenth frame it sees (long.mp4's frame 9: one decoder, one lane, so
    the frames come in order, the longest video first)."""

    seen: list[int] = field(default_factory=list)

    def apply(self, d: Detections) -> Detections:
        self.seen.append(len(d))
        if len(self.seen) == 10:
            raise IndexError("boolean index did not match indexed array")
        return super().apply(d)


def test_a_filter_that_fails_on_one_video_fails_that_video_alone_and_the_run_goes_on(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    backend = EmbeddedBackend(model_path, sessions=1)
    try:
        keep = _BreaksAtTheTenthFrame(class_ids=frozenset({0}))
        sink = FilteredSink(make_sink("jsonl", out, names=backend.model.names), keep)
        ledger = ResumeLedger(out, backend.model.digest, keep.options())
        result = run_bulk(RunOptions(src, out, PipelineConfig(workers=1), split=False, progress=False),
                          backend, sink, ledger)
    finally:
        backend.close()
    assert result.stopped is None
    files = {f.path: f for f in result.files}
    assert files["long.mp4"].status == "error"
    assert files["long.mp4"].error == "post-processing failed: IndexError: boolean index did not match indexed array"
    assert [r["frame"] for r in read_jsonl(out / "long.mp4.jsonl.partial")] == list(range(9))
    for rel in ("short1.mp4", "short2.mp4"):
        assert files[rel].status == "ok" and len(read_jsonl(out / f"{rel}.jsonl")) == 6
