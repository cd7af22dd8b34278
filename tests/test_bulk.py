"""``python -m client.bulk DIR`` on the embedded backend, end to end on real generated videos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client import bulk, triage
from client.contract import COCO_NAMES

from .videos import write_audio_only, write_unknown_codec, write_video


def bulk_main(src: Path, out: Path, model: Path, *extra: str) -> tuple[int, dict]:
    rc = bulk.main([str(src), "--out", str(out), "--model", str(model), "--no-progress", *extra])
    return rc, json.loads((out / "summary.json").read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def entries(summary: dict) -> dict[str, dict]:
    return {f["path"]: f for f in summary["files"]}


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    src = tmp_path / "videos"
    (src / "cam1").mkdir(parents=True)
    write_video(src / "a.mp4", frames=14, size_wh=(160, 96))
    write_video(src / "a.mkv", frames=9, size_wh=(176, 144), codec="mpeg4")  # same stem, other codec
    write_video(src / "cam1" / "portrait.mp4", frames=6, size_wh=(96, 160))
    write_video(src / "cam1" / "rotated.mp4", frames=5, size_wh=(160, 96), rotation=90)
    write_video(src / "cam1" / "one.mp4", frames=1, size_wh=(128, 128))
    (src / "notes.txt").write_text("not a video\n")
    (src / ".hidden.mp4").write_bytes((src / "a.mp4").read_bytes())
    return src


def test_bulk_run_writes_one_jsonl_per_video_in_frame_order_and_a_summary(videos: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    rc, summary = bulk_main(videos, out, model_path)
    assert rc == 0
    files = entries(summary)
    expected_frames = {"a.mp4": 14, "a.mkv": 9, "cam1/portrait.mp4": 6, "cam1/rotated.mp4": 5, "cam1/one.mp4": 1}
    assert {p: f["frames"] for p, f in files.items() if f["status"] == "ok"} == expected_frames
    assert files["notes.txt"]["status"] == "skipped" and files["notes.txt"]["error"]
    assert ".hidden.mp4" not in files
    sizes = {"a.mp4": (160, 96), "a.mkv": (176, 144), "cam1/portrait.mp4": (96, 160), "cam1/rotated.mp4": (96, 160), "cam1/one.mp4": (128, 128)}
    total_boxes = 0
    for rel, n in expected_frames.items():
        lines = read_jsonl(out / f"{rel}.jsonl")
        assert [r["frame"] for r in lines] == list(range(n))
        assert all(b["t"] > a["t"] for a, b in zip(lines, lines[1:]))
        w, h = sizes[rel]
        for r in lines:
            for x1, y1, x2, y2, score, cls in r["detections"]:
                assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h and 0.25 <= score <= 1.0001 and cls == int(cls)
            total_boxes += len(r["detections"])
    assert total_boxes > 0, "the checks on boxes above must not be vacuous"
    assert summary["totals"]["ok"] == 5 and summary["totals"]["frames"] == sum(expected_frames.values())
    assert summary["model"]["names"]["0"] == "person" and summary["model"]["imgsz"] == [320, 320]
    assert summary["options"]["device"] == "cpu" and summary["options"]["workers"] == 1  # the CPU default
    assert {"path", "status", "frames", "seconds", "error"} <= set(files["a.mp4"]) and "fps" not in files["a.mp4"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_batch_1_and_batch_8_give_the_same_detections(videos: Path, tmp_path: Path, model_path: Path) -> None:
    bulk_main(videos, tmp_path / "b1", model_path, "--batch", "1")
    bulk_main(videos, tmp_path / "b8", model_path, "--batch", "8", "--workers", "2")
    for path in (tmp_path / "b1").rglob("*.jsonl"):
        one, eight = read_jsonl(path), read_jsonl(tmp_path / "b8" / path.relative_to(tmp_path / "b1"))
        assert [r["frame"] for r in one] == [r["frame"] for r in eight]
        for a, b in zip(one, eight):
            assert len(a["detections"]) == len(b["detections"])
            if a["detections"]:
                da, db = np.array(a["detections"]), np.array(b["detections"])
                np.testing.assert_allclose(da[:, :4], db[:, :4], atol=0.5)
                assert (da[:, 5] == db[:, 5]).all()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [(["--every", "4"], [0, 4, 8, 12]), (["--fps", "4"], [0, 3, 6, 9, 12]), (["--keyframes"], [0, 12])],
)
def test_sampling_options_infer_the_expected_frames(tmp_path: Path, model_path: Path, flag, expected) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=14, fps=12, gop=12)
    rc, _ = bulk_main(src, tmp_path / "out", model_path, *flag)
    assert rc == 0
    assert [r["frame"] for r in read_jsonl(tmp_path / "out" / "a.mp4.jsonl")] == expected


def test_rerun_skips_complete_files_and_redoes_deleted_or_half_written_ones(videos: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    bulk_main(videos, out, model_path)
    first = {p: p.read_text() for p in out.rglob("*.jsonl")}
    (out / "a.mp4.jsonl").unlink()
    half = out / "cam1" / "portrait.mp4.jsonl"
    half.write_text("".join(half.read_text().splitlines(keepends=True)[:3]))
    rc, summary = bulk_main(videos, out, model_path)
    assert rc == 0
    resumed = {p for p, f in entries(summary).items() if f.get("resumed")}
    assert resumed == {"a.mkv", "cam1/rotated.mp4", "cam1/one.mp4"}
    assert {p: p.read_text() for p in out.rglob("*.jsonl")} == first
    _, summary = bulk_main(videos, out, model_path, "--overwrite")
    assert not any(f.get("resumed") for f in summary["files"])
    _, summary = bulk_main(videos, out, model_path, "--every", "2")  # other options: other results
    assert not any(f.get("resumed") for f in summary["files"])


def corrupt_middle(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_each_bad_input_is_its_own_entry_and_nothing_incomplete_looks_complete(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    (src / "loop").mkdir(parents=True)
    os.symlink("..", src / "loop" / "back")
    write_video(src / "good.mp4", frames=6)
    (src / "zero.mp4").write_bytes(b"")
    trunc = write_video(src / "truncated.mkv", frames=48, gop=12)
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    corrupt_middle(write_video(src / "corrupt.mp4", frames=60, gop=12))
    write_audio_only(src / "sound.m4a")
    write_unknown_codec(src / "codec.mkv")
    out = tmp_path / "out"
    rc, summary = bulk_main(src, out, model_path)
    assert rc == 2
    files = entries(summary)
    assert files["good.mp4"]["status"] == "ok" and files["good.mp4"]["frames"] == 6
    assert files["zero.mp4"]["status"] == "error" and "empty" in files["zero.mp4"]["error"]
    assert files["sound.m4a"]["status"] == "skipped" and "no video stream" in files["sound.m4a"]["error"]
    assert files["codec.mkv"]["status"] == "error" and "codec" in files["codec.mkv"]["error"]
    assert files["loop/back"]["status"] == "skipped" and "loop" in files["loop/back"]["error"]
    assert "loop/back/good.mp4" not in files
    for damaged in ("truncated.mkv", "corrupt.mp4"):
        entry = files[damaged]
        assert entry["status"] == "error" and entry["error"], damaged
        assert not (out / f"{damaged}.jsonl").exists()
        partial = read_jsonl(out / f"{damaged}.jsonl.partial")
        assert entry["frames"] == len(partial) > 0
        assert [r["frame"] for r in partial] == list(range(len(partial)))
    # A rerun tries the failed files again (and only those).
    rc, summary = bulk_main(src, out, model_path)
    assert rc == 2
    again = entries(summary)
    assert again["good.mp4"]["resumed"] and not again["corrupt.mp4"]["resumed"]
    assert again["corrupt.mp4"]["status"] == "error"


def test_a_file_that_vanishes_during_the_run_fails_alone(tmp_path: Path, model_path: Path, monkeypatch) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "stays.mp4", frames=4)
    write_video(src / "goes.mp4", frames=4)
    real_discover = triage.discover

    def discover_then_delete(root: Path, **options):
        found = real_discover(root, **options)
        (src / "goes.mp4").unlink()  # gone between discovery and decoding
        return found

    monkeypatch.setattr(triage, "discover", discover_then_delete)
    rc, summary = bulk_main(src, tmp_path / "out", model_path)
    files = entries(summary)
    assert rc == 2
    assert files["stays.mp4"]["status"] == "ok"
    assert files["goes.mp4"]["status"] == "error" and "No such file" in files["goes.mp4"]["error"]
    assert not (tmp_path / "out" / "goes.mp4.jsonl").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_an_error_entry(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "ok.mp4", frames=2)
    locked = write_video(src / "locked.mp4", frames=2)
    locked.chmod(0)
    rc, summary = bulk_main(src, tmp_path / "out", model_path)
    assert rc == 2 and entries(summary)["locked.mp4"]["status"] == "error"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.bulk", *args], capture_output=True, text=True, timeout=120)


def test_usage_errors_give_one_line_and_exit_1(tmp_path: Path, model_path: Path) -> None:
    missing_dir = run_cli(str(tmp_path / "nope"), "--model", str(model_path))
    assert missing_dir.returncode == 1
    assert missing_dir.stderr.strip().count("\n") == 0 and "not a directory" in missing_dir.stderr
    missing_model = run_cli(str(tmp_path), "--model", str(tmp_path / "none.onnx"))
    assert missing_model.returncode == 1 and "server_config.model build" in missing_model.stderr
    assert missing_model.stderr.strip().count("\n") == 0
    bad_batch = run_cli(str(tmp_path), "--model", str(model_path), "--batch", "0")
    assert bad_batch.returncode == 1 and "--batch" in bad_batch.stderr


def test_help_documents_every_option_default_and_exit_codes() -> None:
    text = run_cli("--help").stdout
    for option in ("--out", "--model", "--batch", "--every", "--fps", "--keyframes", "--format", "--workers", "--square", "--overwrite"):
        assert option in text
    assert "framestream-out" in text and "Exit codes" in text


def test_parquet_dataset_holds_the_same_detections_as_jsonl(videos: Path, tmp_path: Path, model_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="needs the parquet extra")
    bulk_main(videos, tmp_path / "j", model_path)
    rc, summary = bulk_main(videos, tmp_path / "p", model_path, "--format", "parquet")
    assert rc == 0
    table = pq.read_table(tmp_path / "p" / "detections")
    assert table.column_names == ["video", "frame", "t", "x1", "y1", "x2", "y2", "score", "class_id", "class_name",
                                  "track_id"]
    rows = table.to_pylist()
    assert all(r["class_name"] == COCO_NAMES[r["class_id"]] for r in rows if r["class_id"] is not None)
    for path in (tmp_path / "j").rglob("*.jsonl"):
        rel = path.relative_to(tmp_path / "j").as_posix()[: -len(".jsonl")]
        expected = [(r["frame"], d) for r in read_jsonl(path) for d in r["detections"]]
        got = [(r["frame"], [r["x1"], r["y1"], r["x2"], r["y2"], r["score"], r["class_id"]]) for r in rows if r["video"] == rel]
        assert len(got) == len(expected) > 0 or len(expected) == 0
        for (fa, da), (fb, db) in zip(expected, got):
            assert fa == fb
            np.testing.assert_allclose(da, db, atol=0.01)
