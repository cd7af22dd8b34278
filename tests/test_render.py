"""``python -m client.render OUT``: annotated videos and contact sheets from real bulk runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from client import bulk, render
from client.detections import Detections
from client.draw import colour
from client.letterbox import quarter_turns
from client.resume import ResumeLedger
from client.sinks import make_sink

from .videos import write_video

SIZE_WH = (160, 96)  # coded size of both videos; the rotated one displays as 96x160
FRAMES = 12


def bulk_run(src: Path, out: Path, model: Path, *extra: str) -> dict:
    rc = bulk.main([str(src), "--out", str(out), "--model", str(model), "--no-progress", *extra])
    assert rc == 0
    return json.loads((out / "summary.json").read_text())


def render_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.render", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def replace_detections(out: Path, src: Path, rel: str, summary: dict, fmt: str,
                       frames: dict[int, list[list[float]]], track_ids: dict[int, list[int]] | None = None) -> None:
    """Stand in for a backend: write ``rel``'s output with these detections through the real sink
    and record it in the resume ledger, as a run does. Inferred frames keep the run's numbers."""
    sink = make_sink(fmt, out)
    writer = sink.open(rel)
    for index in sorted(frames):
        rows = np.array(frames[index], np.float32).reshape(-1, 6)
        writer.write(index, index / 12, Detections(rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int32)))
    outputs = writer.complete()
    if track_ids:  # a tracker's JSON lines: a seventh value per row
        lines = [json.loads(line) for line in outputs[0].path.read_text().splitlines()]
        for line in lines:
            line["detections"] = [[*r, t] for r, t in zip(line["detections"], track_ids[line["frame"]])]
        outputs[0].path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        from client.outfiles import Output
        import hashlib

        data = outputs[0].path.read_bytes()
        outputs = [Output(outputs[0].path, len(data), hashlib.sha256(data).hexdigest())]
    options = {"sampling": "every=3", "square": False, "format": fmt}
    ResumeLedger(out, summary["model"]["digest"], options).record(src / rel, rel, len(frames), outputs)


def decoded(path: Path) -> tuple[dict, list[av.VideoFrame]]:
    """The stream's size and rate, and its frames."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        return {"wh": (s.codec_context.width, s.codec_context.height), "rate": s.average_rate}, frames


def display(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as a viewer sees it (its rotation applied)."""
    return np.rot90(frame.to_ndarray(format="rgb24"), quarter_turns(frame.rotation))


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> tuple[Path, Path, dict]:
    """A plain and a rotated video, inferred every third frame (0, 3, 6, 9)."""
    root = tmp_path_factory.mktemp("render")
    src = root / "videos"
    src.mkdir()
    write_video(src / "a.mp4", frames=FRAMES, size_wh=SIZE_WH, fps=12)
    write_video(src / "rotated.mp4", frames=FRAMES, size_wh=SIZE_WH, fps=12, rotation=90)
    out = root / "out"
    summary = bulk_run(src, out, model_path, "--every", "3")
    return src, out, summary


def test_annotated_videos_keep_the_source_s_size_rotation_frame_count_rate_and_times(sampled_run) -> None:
    src, out, _ = sampled_run
    assert render.main([str(out), "--source", str(src)]) == 0
    for name in ("a.mp4", "rotated.mp4"):
        source_stream, source_frames = decoded(src / name)
        stream, frames = decoded(out / f"{name}.annotated.mp4")
        assert stream["wh"] == source_stream["wh"] == SIZE_WH
        assert len(frames) == len(source_frames) == FRAMES
        assert stream["rate"] == source_stream["rate"] == 12
        assert [f.rotation for f in frames] == [f.rotation for f in source_frames]
        assert [float(f.time) for f in frames] == pytest.approx([float(f.time) for f in source_frames], abs=1e-3)
    assert decoded(out / "rotated.mp4.annotated.mp4")[1][0].rotation == 90


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_boxes_are_drawn_where_the_detections_say_in_their_class_colour_and_held_between_inferred_frames(
        sampled_run, tmp_path: Path, model_path: Path, fmt: str) -> None:
    src, _, _ = sampled_run
    out = tmp_path / "out"
    summary = bulk_run(src, out, model_path, "--every", "3", "--format", fmt)
    # rotated.mp4 displays as 96 wide, 160 high: its box is in that picture
    boxes = {"a.mp4": [20, 30, 120, 80, 0.9, 2], "rotated.mp4": [12, 40, 80, 140, 0.9, 5]}
    for rel, box in boxes.items():
        replace_detections(out, src, rel, summary, fmt, {0: [box], 3: [], 6: [box], 9: []})
    assert render.main([str(out), "--source", str(src)]) == 0
    for rel, (x1, y1, _x2, y2, _, cls) in boxes.items():
        frames = [display(f) for f in decoded(out / f"{rel}.annotated.mp4")[1]]
        plain = [display(f) for f in decoded(src / rel)[1]]
        want = np.array(colour(cls))
        edge = (round((y1 + y2) / 2), x1 + 1)  # the left edge, halfway down (clear of the label)
        for i in (0, 1, 2, 6, 8):  # inferred 0 and 6, and 1, 2, 8 holding the last inferred boxes
            assert np.abs(frames[i][edge].astype(int) - want).max() < 40, (rel, i, frames[i][edge])
        for i in (3, 4, 9, 11):  # inferred without detections, and the frames that hold them
            assert np.abs(frames[i][edge].astype(int) - plain[i][edge]).max() < 40, (rel, i)
        assert np.abs(plain[0][edge].astype(int) - want).max() > 60  # the source is not that colour there


def test_uninferred_frames_are_left_plain_when_asked(sampled_run, tmp_path: Path, model_path: Path) -> None:
    src, _, _ = sampled_run
    out = tmp_path / "out"
    summary = bulk_run(src, out, model_path, "--every", "3")
    box = [20, 30, 120, 80, 0.9, 2]
    replace_detections(out, src, "a.mp4", summary, "jsonl", {0: [box], 3: [box], 6: [box], 9: [box]})
    assert render.main([str(out), "a.mp4", "--source", str(src), "--uninferred", "plain"]) == 0
    frames = [display(f) for f in decoded(out / "a.mp4.annotated.mp4")[1]]
    plain = [display(f) for f in decoded(src / "a.mp4")[1]]
    edge, want = (55, 21), np.array(colour(2))
    assert all(np.abs(frames[i][edge].astype(int) - want).max() < 40 for i in (0, 3, 6, 9))
    assert all(np.abs(frames[i][edge].astype(int) - plain[i][edge]).max() < 40 for i in (1, 2, 4, 10, 11))
    assert not (out / "rotated.mp4.annotated.mp4").exists()  # only the PATH named


def test_a_track_id_is_labelled_and_coloured_per_track(sampled_run, tmp_path: Path, model_path: Path) -> None:
    src, _, _ = sampled_run
    out = tmp_path / "out"
    summary = bulk_run(src, out, model_path, "--every", "3")
    a, b = [20, 10, 70, 80, 0.9, 2], [90, 10, 150, 80, 0.8, 2]  # one class, two tracks
    replace_detections(out, src, "a.mp4", summary, "jsonl", {i: [a, b] for i in (0, 3, 6, 9)},
                       track_ids={i: [7, 8] for i in (0, 3, 6, 9)})
    assert render.main([str(out), "a.mp4", "--source", str(src)]) == 0
    frame = display(decoded(out / "a.mp4.annotated.mp4")[1][0])
    assert colour(7) != colour(8)
    assert np.abs(frame[45, 21].astype(int) - colour(7)).max() < 40
    assert np.abs(frame[45, 91].astype(int) - colour(8)).max() < 40


def test_the_contact_sheet_is_a_grid_of_the_inferred_frames(sampled_run) -> None:
    src, out, _ = sampled_run
    assert render.main([str(out), "--source", str(src), "--sheet", "2x2"]) == 0
    sheet = Image.open(out / "a.mp4.contact.png")
    assert sheet.size == (2 * 160, 2 * 96)  # 4 inferred frames (0, 3, 6, 9), cells at the video's size
    cells = np.asarray(sheet.convert("RGB")).reshape(2, 96, 2, 160, 3)
    assert all(cells[r, :, c].std() > 10 for r in range(2) for c in range(2))  # every cell has a picture
    rotated = Image.open(out / "rotated.mp4.contact.png")
    assert rotated.size == (2 * 96, 2 * 160)  # cells as a viewer sees the video
    assert render.main([str(out), "a.mp4", "--source", str(src), "--sheet", "3x1"]) == 0
    assert Image.open(out / "a.mp4.contact.png").size == (3 * 160, 96)


def test_render_without_source_uses_the_root_the_run_recorded(sampled_run, tmp_path: Path) -> None:
    src, out, summary = sampled_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.annotated.mp4", "*.contact.png"))
    with_root = dict(summary, inputs={"root": str(src)})
    (copy / "summary.json").write_text(json.dumps(with_root))
    assert render.main([str(copy), str(src / "a.mp4")]) == 0  # a PATH given as its source file
    assert (copy / "a.mp4.annotated.mp4").is_file() and not (copy / "rotated.mp4.annotated.mp4").exists()


def test_a_folder_without_a_run_or_a_path_not_in_the_run_is_one_line_and_exit_1(sampled_run, tmp_path: Path) -> None:
    src, out, _ = sampled_run
    empty = render_cli(tmp_path)
    assert empty.returncode == 1 and "no summary.json" in empty.stderr
    assert empty.stderr.strip().count("\n") == 0 and "Traceback" not in empty.stderr
    stranger = render_cli(out, "nope.mp4", "--source", src)
    assert stranger.returncode == 1 and "nope.mp4: not a video of the run" in stranger.stderr
    assert stranger.stderr.strip().count("\n") == 0
    recorded = render_cli(out, "a.mp4")  # the run recorded its inputs' root: no --source needed
    assert recorded.returncode == 0, recorded.stderr
    unrooted = tmp_path / "unrooted"
    shutil.copytree(out, unrooted)
    summary = json.loads((unrooted / "summary.json").read_text())
    del summary["inputs"]  # as a run from before inputs were recorded
    (unrooted / "summary.json").write_text(json.dumps(summary))
    no_root = render_cli(unrooted, "a.mp4")
    assert no_root.returncode == 1 and "--source" in no_root.stderr
    bad_sheet = render_cli(out, "--source", src, "--sheet", "4by4")
    assert bad_sheet.returncode == 1 and "--sheet" in bad_sheet.stderr


def test_a_run_with_no_complete_output_is_exit_1(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "videos"
    src.mkdir()
    (src / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    out = tmp_path / "out"
    bulk.main([str(src), "--out", str(out), "--model", str(model_path), "--no-progress"])
    done = render_cli(out, "--source", src)
    assert done.returncode == 1 and "no video of this run has a complete output" in done.stderr


def test_a_moved_or_changed_source_fails_that_video_alone_and_leaves_no_annotated_file(
        sampled_run, tmp_path: Path) -> None:
    src, out, _ = sampled_run
    copy_src, copy_out = tmp_path / "videos", tmp_path / "out"
    shutil.copytree(src, copy_src)
    shutil.copytree(out, copy_out)
    assert render.main([str(copy_out), "--source", str(copy_src)]) == 0
    assert (copy_out / "a.mp4.annotated.mp4").is_file()
    (copy_src / "a.mp4").rename(tmp_path / "elsewhere.mp4")
    moved = render_cli(copy_out, "--source", copy_src)
    assert moved.returncode == 2
    assert "a.mp4: source not found" in moved.stderr and "Traceback" not in moved.stderr
    assert not (copy_out / "a.mp4.annotated.mp4").exists()  # the earlier one no longer matches a source
    assert not (copy_out / "a.mp4.contact.png").exists()
    assert (copy_out / "rotated.mp4.annotated.mp4").is_file()  # the other video is drawn
    write_video(copy_src / "a.mp4", frames=FRAMES + 3, size_wh=SIZE_WH)  # another file at the same place
    changed = render_cli(copy_out, "a.mp4", "--source", copy_src)
    assert changed.returncode == 2 and "not the file the detections were made from" in changed.stderr
    assert not any(p.name.startswith(".a.mp4") for p in copy_out.iterdir())  # no hidden temporary left
    assert not (copy_out / "a.mp4.annotated.mp4").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_outputs_read_back_as_the_detections_the_sinks_took_and_labels_show_the_stored_score(
        sampled_run, tmp_path: Path, model_path: Path, fmt: str) -> None:
    """read_frames gives each frame's :class:`Detections` (float32, the sinks' strict type) from
    either format; a JSON line stores the score rounded to 4 places, and its label shows that value
    (0.855 reads "0.85" as the line says, though float32(0.855) is a hair above 0.855)."""
    from client.draw import draw_detections, label
    from client.results import load_run, read_frames

    src, _, _ = sampled_run
    out = tmp_path / "out"
    summary = bulk_run(src, out, model_path, "--every", "3", "--format", fmt)
    box = [20.25, 30.5, 120.75, 80.0, 0.855, 2]
    replace_detections(out, src, "a.mp4", summary, fmt, {0: [box], 3: [], 6: [box, box], 9: []},
                       track_ids={0: [7], 3: [], 6: [7, -1], 9: []} if fmt == "jsonl" else None)
    video = next(v for v in load_run(out).videos if v.rel == "a.mp4")
    frames = read_frames(video.output)
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert all(isinstance(f.detections, Detections) for f in frames)
    assert [len(f.detections) for f in frames] == [1, 0, 2, 0]
    d = frames[0].detections
    assert d.xyxy.dtype == np.float32 and d.xyxy.tolist() == [[20.25, 30.5, 120.75, 80.0]]
    assert d.confidence.tolist() == [float(np.float32(0.855))] and d.class_id.tolist() == [2]
    if fmt == "jsonl":
        assert frames[2].detections.track_id.tolist() == [7, -1]
    else:
        assert frames[2].detections.track_id is None
    names = {2: "car"}
    stored = label((*box, 7), names)  # the label of the value the JSON line holds
    shown = []
    import client.draw as draw

    real = draw.label
    try:
        draw.label = lambda row, n: shown.append(real(row, n)) or real(row, n)
        draw_detections(Image.new("RGB", (160, 96)), d, names, frames[0].score_places)
    finally:
        draw.label = real
    if fmt == "jsonl":
        assert shown == [stored] == ["car #7 0.85"]
    else:  # Parquet stores the float32 score itself: its label is that value's
        assert shown == ["car 0.86"]
