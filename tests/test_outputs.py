"""Outputs that never lie and never escape OUT: names, symlinks, digests, every frame, full disks."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from client.detections import Detections
from client.errors import OutputError, OutputStorageError
from client.outfiles import NAME_RESERVE, OutTree
from client.resume import (MODEL_CHANGED, NO_RECORD, OPTIONS_CHANGED, OUTPUT_DAMAGED, OUTPUT_MISSING, SOURCE_CHANGED,
                           ResumeLedger, redo_lines)
from client.sinks import JsonlSink, ParquetSink

from .test_bulk import bulk_main, entries, read_jsonl
from .videos import frame_image, write_video

OPTIONS = {"sampling": "every 1", "square": False, "format": "jsonl"}
BOX = Detections(np.array([[1, 2, 30, 40]], np.float32), np.array([0.9], np.float32), np.array([3], np.int32))
NONE = Detections.empty()
LONG = "x" * 246 + ".mp4"  # its old hidden temporary ".NAME.jsonl.tmp" was 261 bytes


def write_frames(sink, rel: str, frames: int = 3):
    writer = sink.open(rel)
    for i in range(frames):
        writer.write(i, i / 10, BOX if i % 2 == 0 else NONE)
    return writer


def made(out: Path) -> Path:
    """OUT as the run leaves it before any output: created (a vanished OUT is a storage error)."""
    out.mkdir()
    return out


def all_names(root: Path) -> list[bytes]:
    return [os.fsencode(name) for _, dirs, files in os.walk(root) for name in dirs + files]


def source(tmp_path: Path, name: str = "a.mp4") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")
    return path


# Names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_name_too_long_for_the_file_system_gets_a_shortened_output_that_resume_finds_again(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("pyarrow")
    out = made(tmp_path / "out")
    sink = JsonlSink(out) if kind == "jsonl" else ParquetSink(out)
    rel = f"{'d' * 255}/{LONG}"  # a folder at the limit, a file name whose suffixes pass it
    writer = write_frames(sink, rel)
    outputs = writer.complete()
    assert [o.path for o in outputs] == sink.outputs(rel)
    assert outputs[0].path.is_file() and outputs[0].path.name.endswith(f".mp4.{kind}")
    partial = write_frames(sink, rel).fail()  # the partial output's names fit too
    assert partial is not None and partial.is_file()
    ledger = ResumeLedger(out, "model", OPTIONS)
    video = source(tmp_path)
    ledger.record(video, rel, 3, write_frames(sink, rel).complete())
    assert ledger.check(video, rel, sink.outputs(rel)).frames == 3
    assert max(len(n) for n in all_names(out)) <= 255


def test_two_long_names_that_differ_only_past_the_cut_get_different_outputs(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    a, b = "y" * 300 + "-a.mp4", "y" * 300 + "-b.mp4"
    assert sink.outputs(a) != sink.outputs(b)
    assert sink.outputs(a) == sink.outputs(a)
    assert all(len(os.fsencode(p.name)) + NAME_RESERVE <= 255 + len(".jsonl") for p in sink.outputs(a))


def test_an_out_with_a_smaller_name_limit_shortens_folders_too_without_splitting_characters() -> None:
    tree = OutTree(Path("/nowhere"), name_max=143)  # eCryptfs allows 143 bytes
    stem = tree.stem(f"{'é' * 100}/{'ü' * 100}.mp4")
    assert len(os.fsencode(stem[0])) <= 143 and len(os.fsencode(stem[1])) <= 143 - NAME_RESERVE
    assert all(part.encode("utf-8") for part in stem)  # whole characters: valid UTF-8, no surrogates
    assert stem[1].endswith(".mp4") and tree.stem(f"{'é' * 100}/other.mp4")[0] == stem[0]


def test_a_name_that_is_not_utf8_is_written_with_its_bytes_and_resumes(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow.parquet")
    rel = os.fsdecode(b"caf\xe9.mp4")  # how Python holds a Linux name that is not UTF-8
    out = made(tmp_path / "out")
    jsonl = JsonlSink(out)
    outputs = write_frames(jsonl, rel).complete()
    assert b"caf\xe9.mp4.jsonl" in os.listdir(os.fsencode(out))
    ledger = ResumeLedger(out, "model", OPTIONS)
    video = source(tmp_path, rel)
    ledger.record(video, rel, 3, outputs)
    assert ledger.check(video, rel, jsonl.outputs(rel)).frames == 3
    write_frames(ParquetSink(out), rel).complete()
    videos = set(pa.read_table(out / "detections").column("video").to_pylist())
    assert videos == {"caf\\xe9.mp4"}  # Parquet strings are UTF-8: the odd byte as a backslash escape


# Symlinks ---------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    place = tmp_path / "outside"
    place.mkdir()
    (place / "precious.txt").write_text("keep me\n")
    return place


def untouched(place: Path) -> bool:
    return sorted(p.name for p in place.iterdir()) == ["precious.txt"] and (place / "precious.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("link", ["a.mp4.jsonl", "a.mp4.jsonl.partial"])
def test_a_symlink_at_an_outputs_place_refuses_that_video_and_leaves_its_target_alone(tmp_path: Path, outside: Path, link: str) -> None:
    out = made(tmp_path / "out")
    os.symlink(outside / "precious.txt", out / link)
    with pytest.raises(OutputError, match=f"{link} is a symlink; remove it") as info:
        JsonlSink(out).open("a.mp4")
    assert not isinstance(info.value, OutputStorageError)
    write_frames(JsonlSink(out), "b.mp4").complete()  # the others go on
    assert untouched(outside)


@pytest.mark.parametrize("link", ["sub", "detections", ".framestream"])
def test_a_folder_symlink_inside_out_is_never_followed(tmp_path: Path, outside: Path, link: str) -> None:
    pytest.importorskip("pyarrow")
    out = made(tmp_path / "out")
    os.symlink(outside, out / link, target_is_directory=True)
    if link == ".framestream":
        outputs = write_frames(JsonlSink(out), "a.mp4").complete()
        with pytest.raises(OutputError, match="is a symlink"):
            ResumeLedger(out, "model", OPTIONS).record(source(tmp_path), "a.mp4", 3, outputs)
    else:
        with pytest.raises(OutputError, match=f"{link} is a symlink"):
            (JsonlSink(out) if link == "sub" else ParquetSink(out)).open("sub/a.mp4")
    assert untouched(outside)


def test_a_symlink_planted_while_writing_is_replaced_not_written_through(tmp_path: Path, outside: Path) -> None:
    out = made(tmp_path / "out")
    sink = JsonlSink(out)
    writer, failing = write_frames(sink, "a.mp4"), write_frames(sink, "b.mp4")
    os.symlink(outside / "precious.txt", out / "a.mp4.jsonl")
    os.symlink(outside / "precious.txt", out / "b.mp4.jsonl.partial")
    writer.complete()
    assert failing.fail() == out / "b.mp4.jsonl.partial"
    assert not (out / "a.mp4.jsonl").is_symlink() and len(read_jsonl(out / "a.mp4.jsonl")) == 3
    assert not (out / "b.mp4.jsonl.partial").is_symlink()
    assert untouched(outside)


# Resume -----------------------------------------------------------------------------------


def completed(tmp_path: Path, options=OPTIONS) -> tuple[Path, Path, JsonlSink, ResumeLedger]:
    out = made(tmp_path / "out")
    sink, ledger, video = JsonlSink(out), ResumeLedger(out, "model-1", options), source(tmp_path)
    ledger.record(video, "a.mp4", 3, write_frames(sink, "a.mp4").complete())
    return out, video, sink, ledger


def test_an_output_damaged_without_changing_its_size_is_redone(tmp_path: Path) -> None:
    out, video, sink, ledger = completed(tmp_path)
    assert ledger.check(video, "a.mp4", sink.outputs("a.mp4")).frames == 3
    path = out / "a.mp4.jsonl"
    data = bytearray(path.read_bytes())
    data[data.index(b"0.9")] = ord("7")  # a score changed: same size, other content
    path.write_bytes(bytes(data))
    assert ledger.check(video, "a.mp4", sink.outputs("a.mp4")).reason == OUTPUT_DAMAGED
    assert ledger.completed_frames(video, "a.mp4", sink.outputs("a.mp4")) is None


def test_the_ledger_says_why_a_video_is_redone(tmp_path: Path) -> None:
    out, video, sink, _ = completed(tmp_path)
    outputs = sink.outputs("a.mp4")

    def reason(model: str = "model-1", options=OPTIONS, rel: str = "a.mp4") -> str | None:
        return ResumeLedger(out, model, options).check(video, rel, outputs).reason

    assert reason() is None
    assert reason(model="model-2") == MODEL_CHANGED
    assert reason(options={**OPTIONS, "sampling": "every 3"}) == f"{OPTIONS_CHANGED}: sampling"
    assert reason(options={**OPTIONS, "format": "parquet", "square": True}) == f"{OPTIONS_CHANGED}: format, square"
    assert reason(rel="never.mp4") == NO_RECORD
    os.utime(video, ns=(1, 1))
    assert reason() == SOURCE_CHANGED
    ledger = ResumeLedger(out, "model-1", OPTIONS)
    ledger.record(video, "a.mp4", 3, write_frames(sink, "a.mp4").complete())
    (out / "a.mp4.jsonl").unlink()
    assert reason() == OUTPUT_MISSING
    verdicts = [ledger.check(video, "a.mp4", outputs), ledger.check(video, "b.mp4", outputs),
                ledger.check(video, "c.mp4", outputs)]
    assert redo_lines(verdicts) == [f"redoing 2 videos: {NO_RECORD}", f"redoing 1 video: {OUTPUT_MISSING}"]


def test_an_output_is_fsynced_before_its_rename_and_its_folder_after(tmp_path: Path, monkeypatch) -> None:
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None) -> None:
        events.append(("replace", os.stat(src, dir_fd=src_dir_fd).st_ino))
        real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    out = made(tmp_path / "out")
    writer = write_frames(JsonlSink(out), "a.mp4")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    writer.complete()
    file_ino, dir_ino = (out / "a.mp4.jsonl").stat().st_ino, out.stat().st_ino
    assert events == [("fsync", file_ino), ("replace", file_ino), ("fsync", dir_ino)]


# Every frame, one current result ----------------------------------------------------------


def test_parquet_has_a_row_for_every_frame_with_null_detections_where_none_were_found(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    write_frames(ParquetSink(tmp_path), "a.mp4", frames=3).complete()
    rows = pq.read_table(tmp_path / "detections").to_pylist()
    assert [r["frame"] for r in rows] == [0, 1, 2]
    assert rows[1]["score"] is None and rows[1]["class_id"] is None and rows[1]["t"] == pytest.approx(0.1)
    assert rows[0]["class_id"] == 3 and rows[2]["score"] == pytest.approx(0.9)


def test_names_that_dataset_readers_would_skip_are_still_read_with_the_dataset(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    rels = ["_x.mp4", "_sub/a.mp4", "%_x.mp4", "plain.mp4"]
    sink = ParquetSink(tmp_path)
    for rel in rels:
        write_frames(sink, rel, frames=1).complete()
    assert len({p for rel in rels for p in sink.outputs(rel)}) == 4
    assert set(pq.read_table(tmp_path / "detections").column("video").to_pylist()) == set(rels)


def test_a_video_completed_in_another_format_leaves_no_stale_output_of_the_first(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    write_frames(JsonlSink(tmp_path), "a.mp4").complete()
    write_frames(JsonlSink(tmp_path), "b.mp4").fail()
    write_frames(ParquetSink(tmp_path), "a.mp4").complete()
    write_frames(ParquetSink(tmp_path), "b.mp4").complete()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "detections/a.mp4.parquet", "detections/b.mp4.parquet"]


def test_a_failed_video_keeps_its_frames_as_partial_and_leaves_the_earlier_complete_output(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    write_frames(sink, "a.mp4").complete()
    earlier = (tmp_path / "a.mp4.jsonl").read_bytes()
    assert write_frames(sink, "a.mp4", frames=2).fail() == tmp_path / "a.mp4.jsonl.partial"
    assert (tmp_path / "a.mp4.jsonl").read_bytes() == earlier  # replaced only by a complete one
    assert len(read_jsonl(tmp_path / "a.mp4.jsonl.partial")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_video_that_fails_before_writing_a_frame_leaves_the_earlier_attempts_partial(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    assert write_frames(sink, "a.mp4", frames=2).fail() == tmp_path / "a.mp4.jsonl.partial"
    earlier = (tmp_path / "a.mp4.jsonl.partial").read_bytes()
    assert sink.open("a.mp4").fail() is None  # this run wrote nothing: only its own temporary goes
    assert (tmp_path / "a.mp4.jsonl.partial").read_bytes() == earlier
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# Storage ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_out(tmpfs) -> Path:
    """A 64 KiB tmpfs as OUT: a disk that really fills up."""
    return tmpfs("64k")


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_full_disk_is_a_storage_error_and_the_failed_output_frees_its_space(tiny_out: Path, kind: str) -> None:
    pytest.importorskip("pyarrow")
    writer = (JsonlSink(tiny_out) if kind == "jsonl" else ParquetSink(tiny_out)).open("a.mp4")
    noise = np.random.default_rng(0).random((1000, 300, 6), np.float32)  # does not compress away
    with pytest.raises(OutputStorageError, match="No space left on device"):
        for i in range(1000):
            writer.write(i, i / 10, Detections(noise[i, :, :4], noise[i, :, 4], (noise[i, :, 5] * 80).astype(np.int32)))
        writer.complete()
    assert writer.fail() is None  # a cut-off temporary is no partial output
    assert [name for _, _, files in os.walk(tiny_out) for name in files] == []


def test_out_removed_while_a_video_is_written_is_a_storage_error(tmp_path: Path) -> None:
    out = made(tmp_path / "out")
    writer = write_frames(JsonlSink(out), "sub/a.mp4")
    shutil.rmtree(out)
    with pytest.raises(OutputStorageError, match="no longer exists"):
        writer.complete()
    assert writer.fail() is None


def test_a_read_only_or_vanished_out_is_a_storage_error(tiny_out: Path, tmp_path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_out)], check=True)
    with pytest.raises(OutputStorageError, match="Read-only file system"):
        JsonlSink(tiny_out).open("a.mp4")
    with pytest.raises(OutputStorageError, match="no longer exists"):
        JsonlSink(tmp_path / "gone").open("a.mp4")
    with pytest.raises(OutputStorageError):
        ResumeLedger(tiny_out, "model", OPTIONS).record(source(tmp_path), "a.mp4", 0, [])


# End to end -------------------------------------------------------------------------------


def test_a_long_named_video_next_to_normal_ones_is_ok_with_its_shortened_output(tmp_path: Path, model_path: Path) -> None:
    src, out = tmp_path / "v", tmp_path / "out"
    src.mkdir()
    write_video(src / "a.mp4", frames=3)
    write_video(src / LONG, frames=4)
    rc, summary = bulk_main(src, out, model_path)
    files = entries(summary)
    assert rc == 0 and set(files) == {"a.mp4", LONG}
    assert files[LONG]["status"] == "ok" and files[LONG]["frames"] == 4
    assert len(read_jsonl(JsonlSink(out).outputs(LONG)[0])) == 4
    rc, summary = bulk_main(src, out, model_path)
    assert entries(summary)[LONG]["resumed"]


def test_a_video_whose_name_is_not_utf8_is_ok(tmp_path: Path, model_path: Path) -> None:
    src, out = tmp_path / "v", tmp_path / "out"
    src.mkdir()
    write_video(src / "plain.mp4", frames=3)
    os.rename(os.fsencode(src / "plain.mp4"), os.fsencode(src) + b"/caf\xe9.mp4")
    rc, summary = bulk_main(src, out, model_path)
    rel = os.fsdecode(b"caf\xe9.mp4")
    assert rc == 0 and entries(summary)["caf\\xe9.mp4"]["status"] == "ok"  # summary.json: valid UTF-8 text
    assert len(read_jsonl(out / f"{rel}.jsonl")) == 3
    assert json.loads((out / "summary.json").read_text())["files"][0]["frames"] == 3


def test_a_symlink_in_out_fails_that_video_alone_and_its_target_is_untouched(tmp_path: Path, model_path: Path, outside: Path) -> None:
    src, out = tmp_path / "v", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    out.mkdir()
    for rel in ("a.mp4", "b.mp4", "sub/c.mp4"):
        write_video(src / rel, frames=3)
    os.symlink(outside / "precious.txt", out / "a.mp4.jsonl")
    os.symlink(outside, out / "sub", target_is_directory=True)
    rc, summary = bulk_main(src, out, model_path)
    files = entries(summary)
    assert rc == 2 and files["b.mp4"]["status"] == "ok"
    for rel in ("a.mp4", "sub/c.mp4"):
        assert files[rel]["status"] == "error" and "symlink" in files[rel]["error"]
    assert untouched(outside)


def test_a_same_size_damaged_output_is_redone_on_rerun(tmp_path: Path, model_path: Path) -> None:
    src, out = tmp_path / "v", tmp_path / "out"
    src.mkdir()
    write_video(src / "a.mp4", frames=4)
    write_video(src / "b.mp4", frames=3)
    bulk_main(src, out, model_path)
    path = out / "a.mp4.jsonl"
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"frame":1,', b'"frame":7,'))
    assert path.stat().st_size == len(good) and path.read_bytes() != good
    rc, summary = bulk_main(src, out, model_path)
    files = entries(summary)
    assert rc == 0 and not files["a.mp4"]["resumed"] and files["b.mp4"]["resumed"]
    assert path.read_bytes() == good


def write_half_grey_video(path: Path, frames: int) -> Path:
    """Structured frames the model finds boxes in, then flat grey ones where it finds none."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(frames):
            image = frame_image(i, 160, 96) if i < frames // 2 else np.full((96, 160, 3), 128, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_parquet_every_3_has_a_row_for_every_processed_frame(tmp_path: Path, model_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "v"
    src.mkdir()
    write_half_grey_video(src / "a.mp4", frames=40)
    rc, summary = bulk_main(src, tmp_path / "out", model_path, "--format", "parquet", "--every", "3")
    assert rc == 0
    rows = pq.read_table(tmp_path / "out" / "detections").to_pylist()
    assert {r["frame"] for r in rows} == set(range(0, 40, 3)) and entries(summary)["a.mp4"]["frames"] == 14
    empty = {r["frame"] for r in rows if r["score"] is None}
    assert empty and empty != {r["frame"] for r in rows}  # frames with and without detections, both kept


def test_a_rerun_with_other_options_or_another_model_says_why_it_redoes_each_video(
        tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from server_config.model.build import build_model
    from server_config.model.files import save_onnx_atomically

    src, out = tmp_path / "v", tmp_path / "out"
    src.mkdir()
    write_video(src / "a.mp4", frames=4)
    write_video(src / "b.mp4", frames=4)
    bulk_main(src, out, model_path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc, _ = bulk_main(src, out, model_path, "--every", "2")
    assert rc == 0 and "redoing 2 videos: the options changed: sampling" in caplog.messages
    other = tmp_path / "other.onnx"
    save_onnx_atomically(build_model(size="n", imgsz=256), other)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc, summary = bulk_main(src, out, other, "--every", "2")
    assert rc == 0 and "redoing 2 videos: the model changed" in caplog.messages
    assert not any(f["resumed"] for f in summary["files"])
