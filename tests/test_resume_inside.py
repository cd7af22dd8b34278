"""Resume inside a video: a stopped run's partial outputs are continued by the next run.

Every run is the real bulk CLI in its own process (``tests/resume_runner.py``), its backend
counting the frames it infers; a stop is a real SIGTERM sent when the backend has inferred a
given number of frames (a count, not a timer). The rerun may infer only the frames from each
video's last key frame at or before its partial's last frame, and its outputs must be byte
for byte those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Processes
from .test_faults import wait_for
from .videos import frame_image, write_video

ROOT = Path(__file__).resolve().parents[1]
FRAMES, GOP = 200, 25
NAMES = ("a.mp4", "b.mp4", "c.mp4")
BASE = ("--workers", "3", "--no-split", "--batch", "8")


def _video(path: Path, shift: int, frames: int = FRAMES) -> Path:
    """A video of its own content (the blocks drift from ``shift``), GOP 25, small."""
    return write_video(path, frames=frames, size_wh=(96, 64), gop=GOP, fps=25,
                       image=lambda i, w, h: frame_image(i + 7 * shift, w, h))


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("long")
    for k, name in enumerate(NAMES):
        _video(src / name, k)
    return src


def run(src: Path, out: Path, model: Path, count: Path, *extra: str, stop_at: int | None = None,
        segment_0_at: int | None = None, processes: Processes) -> tuple[int, str, int]:
    """A run (stopped by SIGTERM once ``stop_at`` frames are inferred): exit code, stderr, frames inferred."""
    hold = []
    if stop_at is not None:
        ready, go = count.with_name(count.name + ".ready"), count.with_name(count.name + ".go")
        hold = [str(ready), str(stop_at), str(go)] + ([str(segment_0_at)] if segment_0_at is not None else [])
    cmd = [sys.executable, "-m", "tests.resume_runner", str(count), *hold, "--", str(src), "--out", str(out),
           "--model", str(model), "--no-progress", *extra]
    proc = processes.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if stop_at is not None:
        wait_for(ready, proc)
        proc.send_signal(signal.SIGTERM)
        wait_for(Path(f"{ready}.stopped"), proc)  # the run has taken the signal: let the held batch go
        go.touch()
    _, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr, int(count.read_text())


@pytest.fixture(scope="module")
def full(src: Path, tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """An uninterrupted run's outputs: what every resumed output must equal byte for byte."""
    out = tmp_path_factory.mktemp("full") / "out"
    processes = Processes()
    try:
        rc, stderr, inferred = run(src, out, model_path, out.with_name("count"), *BASE, processes=processes)
    finally:
        processes.close()
    assert rc == 0 and inferred == len(NAMES) * FRAMES, stderr[-2000:]
    return out


def partial_frames(out: Path, name: str) -> list[int]:
    path = out / f"{name}.jsonl.partial"
    return [json.loads(line)["frame"] for line in path.read_text().splitlines()] if path.exists() else []


def last_key(frames: list[int]) -> int:
    """The last key frame at or before the partial's last frame (a GOP of 25 from frame 0)."""
    return frames[-1] // GOP * GOP if frames else 0


def stopped_run(src: Path, out: Path, model: Path, tmp_path: Path, processes: Processes, *extra: str,
                at: int = len(NAMES) * FRAMES // 2) -> dict[str, list[int]]:
    rc, stderr, inferred = run(src, out, model, tmp_path / "count-stop", *BASE, *extra, stop_at=at,
                               processes=processes)
    assert rc == 143, stderr[-2000:]
    return {name: partial_frames(out, name) for name in NAMES}


def with_a_box(line: bytes) -> bytes:
    """The frame's line with one more detection, written as the output writes lines."""
    doc = json.loads(line)
    doc["detections"].insert(0, [1.0, 2.0, 3.0, 4.0, 0.9, 0])
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_a_run_stopped_at_half_its_frames_is_continued_from_each_videos_last_key_frame_byte_identical(
        src: Path, full: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out = tmp_path / "out"
    partials = stopped_run(src, out, model_path, tmp_path, processes)
    for name, frames in partials.items():  # each in flight, each a gap-free prefix past its first GOP
        assert frames == list(range(len(frames))) and len(frames) > GOP, (name, len(frames))
    rc, stderr, inferred = run(src, out, model_path, tmp_path / "count-rerun", *BASE, processes=processes)
    assert rc == 0, stderr[-2000:]
    allowed = sum(FRAMES - last_key(frames) for frames in partials.values())
    assert inferred <= allowed < len(NAMES) * FRAMES * 3 // 4
    for name in NAMES:
        assert (out / f"{name}.jsonl").read_bytes() == (full / f"{name}.jsonl").read_bytes(), name
        assert not (out / f"{name}.jsonl.partial").exists()
    files = {f["path"]: f for f in summary(out)["files"]}
    kept = sum(last_key(frames) for frames in partials.values())
    assert {name: files[name]["frames_kept"] for name in NAMES} == {n: last_key(f) for n, f in partials.items()}
    assert summary(out)["totals"]["frames_kept"] == kept and summary(out)["totals"]["continued"] == 3
    assert summary(out)["totals"]["frames"] == inferred  # the run's count is what it inferred
    assert f"resumed 3 videos from partials, {kept:,} frames kept" in stderr.splitlines()[-1]
    assert not list((out / ".framestream" / "partial").rglob("*.record"))  # completed: nothing to continue


def test_a_rerun_stopped_before_it_passes_the_old_prefix_keeps_the_old_prefix(
        src: Path, full: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out = tmp_path / "out"
    before = stopped_run(src, out, model_path, tmp_path, processes)
    old = {name: (out / f"{name}.jsonl.partial").read_bytes() for name in NAMES}
    rc, stderr, _ = run(src, out, model_path, tmp_path / "count-again", *BASE, stop_at=8, processes=processes)
    assert rc == 143, stderr[-2000:]
    for name in NAMES:  # the second stop came inside the re-decoded GOP: the old partial stands
        now = (out / f"{name}.jsonl.partial").read_bytes()
        assert len(now) >= len(old[name]) and now.startswith(old[name]), name
    rc, stderr, inferred = run(src, out, model_path, tmp_path / "count-rerun", *BASE, processes=processes)
    assert rc == 0, stderr[-2000:]
    assert inferred <= sum(FRAMES - last_key(frames) for frames in before.values())
    for name in NAMES:
        assert (out / f"{name}.jsonl").read_bytes() == (full / f"{name}.jsonl").read_bytes(), name


def test_a_source_changed_between_runs_is_redone_from_frame_0_and_the_others_continued(
        src: Path, full: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    mine = tmp_path / "src"
    shutil.copytree(src, mine)
    out = tmp_path / "out"
    partials = stopped_run(mine, out, model_path, tmp_path, processes)
    (mine / "b.mp4").unlink()
    shutil.copy(mine / "c.mp4", mine / "b.mp4")  # b is now c's content: its partial is not b's any more
    rc, stderr, inferred = run(mine, out, model_path, tmp_path / "count-rerun", *BASE, processes=processes)
    assert rc == 0, stderr[-2000:]
    assert "redoing 1 video from frame 0: the source changed" in stderr
    assert inferred <= FRAMES + sum(FRAMES - last_key(partials[n]) for n in ("a.mp4", "c.mp4"))
    assert (out / "b.mp4.jsonl").read_bytes() == (full / "c.mp4.jsonl").read_bytes()
    for name in ("a.mp4", "c.mp4"):
        assert (out / f"{name}.jsonl").read_bytes() == (full / f"{name}.jsonl").read_bytes(), name
    assert {f["path"]: f["frames_kept"] for f in summary(out)["files"]}["b.mp4"] == 0


def test_other_options_discard_the_partials(
        src: Path, full: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out = tmp_path / "out"
    stopped_run(src, out, model_path, tmp_path, processes)
    rc, stderr, inferred = run(src, out, model_path, tmp_path / "count-rerun", *BASE, "--every", "2",
                               processes=processes)
    assert rc == 0, stderr[-2000:]
    assert "redoing 3 videos from frame 0: the options changed: sampling" in stderr
    assert inferred == len(NAMES) * FRAMES // 2
    for name in NAMES:
        every2 = (full / f"{name}.jsonl").read_bytes().splitlines(keepends=True)[::2]
        assert (out / f"{name}.jsonl").read_bytes() == b"".join(every2), name


def test_a_tampered_partial_is_discarded_and_its_video_redone(
        src: Path, full: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out = tmp_path / "out"
    partials = stopped_run(src, out, model_path, tmp_path, processes)
    path = out / "a.mp4.jsonl.partial"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = with_a_box(lines[3])
    path.write_bytes(b"".join(lines))  # a kept frame, before the key frame the rerun decodes from
    rc, stderr, inferred = run(src, out, model_path, tmp_path / "count-rerun", *BASE, processes=processes)
    assert rc == 0, stderr[-2000:]
    assert "redoing 1 video from frame 0: its partial is damaged" in stderr
    assert inferred <= FRAMES + sum(FRAMES - last_key(partials[n]) for n in ("b.mp4", "c.mp4"))
    for name in NAMES:
        assert (out / f"{name}.jsonl").read_bytes() == (full / f"{name}.jsonl").read_bytes(), name


def test_a_partial_whose_frames_inferred_again_disagree_is_redone_from_frame_0_in_the_same_run(
        src: Path, full: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out = tmp_path / "out"
    partials = stopped_run(src, out, model_path, tmp_path, processes)
    path = out / "a.mp4.jsonl.partial"
    lines = path.read_bytes().splitlines(keepends=True)
    last = len(lines) - 1  # a frame the rerun infers again (after the last key frame)
    assert last >= last_key(partials["a.mp4"])
    lines[last] = with_a_box(lines[last])
    data = b"".join(lines)
    path.write_bytes(data)
    record_path = next((out / ".framestream" / "partial").glob("a.mp4*"))
    record = json.loads(record_path.read_text())  # a record that vouches for it: only the frames can tell
    record.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    record_path.write_text(json.dumps(record))
    rc, stderr, inferred = run(src, out, model_path, tmp_path / "count-rerun", *BASE, processes=processes)
    assert rc == 0, stderr[-2000:]
    assert "redoing 1 video from frame 0: its partial disagrees with the frames inferred again" in stderr, stderr[-3000:]
    for name in NAMES:
        assert (out / f"{name}.jsonl").read_bytes() == (full / f"{name}.jsonl").read_bytes(), name
    files = {f["path"]: f for f in summary(out)["files"]}
    assert files["a.mp4"]["status"] == "ok" and files["a.mp4"]["frames_kept"] == 0


@pytest.fixture(scope="module")
def long_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("split")
    _video(src / "long.mp4", 3, frames=400)
    return src


def test_a_stopped_split_video_keeps_its_finished_segments_past_the_gap(
        long_src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    full = tmp_path / "full"
    rc, stderr, inferred = run(long_src, full, model_path, tmp_path / "count-full", "--workers", "2",
                               processes=processes)
    assert rc == 0 and inferred == 400, stderr[-2000:]
    assert "split 1 long video(s) into 4 segments" in stderr  # frames 0-99, 100-199, 200-299, 300-399
    out = tmp_path / "out"
    # Segment 0 holds at frame 60 while the other decoder does segments 1 and 2: at 200 frames
    # inferred, segment 1 is complete past the gap, segment 2 half done.
    rc, stderr, _ = run(long_src, out, model_path, tmp_path / "count-stop", "--workers", "2", stop_at=200,
                        segment_0_at=60, processes=processes)
    assert rc == 143, stderr[-2000:]
    assert partial_frames(out, "long.mp4") == list(range(60))
    rc, stderr, inferred = run(long_src, out, model_path, tmp_path / "count-rerun", "--workers", "2",
                               processes=processes)
    assert rc == 0, stderr[-2000:]
    assert (out / "long.mp4.jsonl").read_bytes() == (full / "long.mp4.jsonl").read_bytes()
    kept = {f["path"]: f for f in summary(out)["files"]}["long.mp4"]["frames_kept"]
    assert kept == 50 + 100  # frames 0-49 (before the key frame at 50) and segment 1
    assert inferred == 400 - kept
