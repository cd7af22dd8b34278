"""``OUT/<rel>.meta.json`` per video, and the class names in the Parquet dataset."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from client import bulk
from client.contract import COCO_NAMES

from .videos import write_video


def run(src: Path, out: Path, model: Path, *extra: str) -> tuple[int, dict]:
    rc = bulk.main([str(src), "--out", str(out), "--model", str(model), "--no-progress", *extra])
    return rc, json.loads((out / "summary.json").read_text())


def by_path(summary: dict) -> dict[str, dict]:
    return {f["path"]: f for f in summary["files"]}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    src = tmp_path / "v"
    (src / "cam").mkdir(parents=True)
    write_video(src / "wide.mp4", frames=8, size_wh=(320, 192), fps=8, faststart=True)  # cut, it still opens
    write_video(src / "cam" / "turned.mp4", frames=6, size_wh=(160, 96), fps=12, rotation=90)
    write_video(src / "old.mkv", frames=5, size_wh=(176, 144), fps=10, codec="mpeg4")
    return src


def test_each_video_gets_a_sidecar_with_its_geometry_timing_model_sampling_and_letterbox(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    rc, summary = run(src, out, model_path, "--every", "2", "--classes", "person,car")
    assert rc == 0
    files = by_path(summary)
    expected = {  # (stored w, h, rotation, display w, h, fps, frames, duration, codec, letterbox W x H, inferred)
        "wide.mp4": (320, 192, 0, 320, 192, 8.0, 8, 1.0, "h264", "320x192", 4),
        "cam/turned.mp4": (160, 96, 90, 96, 160, 12.0, 6, 0.5, "h264", "192x320", 3),
        "old.mkv": (176, 144, 0, 176, 144, 10.0, None, 0.5, "mpeg4", "320x288", 3),  # Matroska declares no count
    }
    for rel, (w, h, rot, dw, dh, fps, frames, duration, codec, shape, inferred) in expected.items():
        meta = json.loads((out / f"{rel}.meta.json").read_text())
        got = (meta["width"], meta["height"], meta["rotation"], meta["display_width"], meta["display_height"],
               meta["fps"], meta["frames"], meta["duration_s"], meta["codec"], meta["letterbox"]["shape"],
               meta["frames_inferred"])
        assert got == (w, h, rot, dw, dh, fps, frames, pytest.approx(duration, abs=0.05), codec, shape, inferred)
        assert meta["video"] == rel and meta["sampling"] == "every=2"
        assert meta["options"]["classes"] == [COCO_NAMES.index("person"), COCO_NAMES.index("car")]
        assert meta["model"]["digest"] == summary["model"]["digest"] and meta["model"]["names"]["2"] == "car"
        assert meta["outputs"] == [f"{rel}.jsonl"]
        assert files[rel]["letterbox"] == shape and files[rel]["meta"] == f"{rel}.meta.json"
    assert not [p for p in out.rglob(".*.tmp")]  # written under a temporary name, then renamed


def test_a_sidecar_at_every_frame_lists_frames_when_the_container_does_not(src: Path, tmp_path: Path,
                                                                            model_path: Path) -> None:
    out = tmp_path / "out"
    assert run(src, out, model_path)[0] == 0
    assert json.loads((out / "old.mkv.meta.json").read_text())["frames"] == 5  # all decoded and inferred


def test_a_video_that_fails_on_a_rerun_keeps_its_earlier_output_and_sidecar_and_is_redone_next(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    assert run(src, out, model_path)[0] == 0
    earlier = {name: (out / name).read_bytes() for name in ("wide.mp4.meta.json", "wide.mp4.jsonl")}
    damaged = src / "wide.mp4"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size * 2 // 3])  # decodes, then ends early
    rc, summary = run(src, out, model_path)
    assert rc == 2 and by_path(summary)["wide.mp4"]["status"] == "error" and by_path(summary)["wide.mp4"]["meta"] is None
    assert {name: (out / name).read_bytes() for name in earlier} == earlier  # the earlier result, as it was
    assert (out / "old.mkv.meta.json").is_file()  # the others keep theirs
    rc, again = run(src, out, model_path)  # its record names the earlier source: redone, not resumed
    assert rc == 2 and not by_path(again)["wide.mp4"]["resumed"]


def test_a_symlink_at_the_sidecars_place_fails_that_video_and_its_target_is_untouched(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    (out / "cam").mkdir(parents=True)
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    os.symlink(target, out / "cam" / "turned.mp4.meta.json")
    rc, summary = run(src, out, model_path)
    entry = by_path(summary)["cam/turned.mp4"]
    assert rc == 2 and entry["status"] == "error" and "is a symlink" in entry["error"]
    assert target.read_text() == "keep me\n" and by_path(summary)["wide.mp4"]["status"] == "ok"
    (out / "cam" / "turned.mp4.meta.json").unlink()
    rc, again = run(src, out, model_path)  # no resume record was written for it: redone
    assert rc == 0 and not by_path(again)["cam/turned.mp4"]["resumed"] and by_path(again)["wide.mp4"]["resumed"]


def test_a_run_without_sidecars_still_resumes_without_redoing(src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    assert run(src, out, model_path)[0] == 0
    for meta in out.rglob("*.meta.json"):  # as an earlier framestream left OUT
        meta.unlink()
    rc, summary = run(src, out, model_path)
    assert rc == 0 and all(f["resumed"] and f["meta"] is None for f in summary["files"])


def test_parquet_has_class_names_as_a_column_and_in_its_schema_and_an_older_schema_is_redone(
        src: Path, tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    assert run(src, out, model_path, "--format", "parquet")[0] == 0
    table = pq.read_table(out / "detections")
    named = [r for r in table.to_pylist() if r["class_id"] is not None]
    assert named and all(r["class_name"] == COCO_NAMES[r["class_id"]] for r in named)
    stored = json.loads(pq.read_schema(out / "detections" / "wide.mp4.parquet").metadata[b"framestream.names"])
    assert stored == {str(i): n for i, n in enumerate(COCO_NAMES)}
    for record in (out / ".framestream" / "done").rglob("*.json"):  # as a run before the class_name column
        data = json.loads(record.read_text())
        del data["options"]["parquet_columns"]
        record.write_text(json.dumps(data))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc, summary = run(src, out, model_path, "--format", "parquet")
    assert rc == 0 and "redoing 3 videos: the options changed: parquet_columns" in caplog.messages
    assert not any(f["resumed"] for f in summary["files"])
