"""Issue #24, findings 14 and 16: number options out of bounds, shard summaries that are not
ones, a closed stderr, OUT inside DIR, control characters in names, FIFOs, sockets and device
links under DIR, and ``--model DIR``; each through the real CLI in a subprocess, on real files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client.threads import usable_cpus

from .videos import write_video

ROOT = Path(__file__).resolve().parent.parent


def bulk(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m client.bulk ARGS`` in a fresh interpreter, stdout and stderr as text."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "client.bulk", *args], cwd=ROOT, text=True, timeout=timeout,
                          **kwargs)


def files(out: Path) -> dict[str, dict]:
    return {f["path"]: f for f in json.loads((out / "summary.json").read_text())["files"]}


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "a.mp4", frames=12, fps=12)
    return src


# --- 14: every number option finite and within its bounds -------------------------------------
@pytest.mark.parametrize("flags, option", [
    (["--fps", "nan"], "--fps"),
    (["--fps", "inf"], "--fps"),
    (["--batch", "1025"], "--batch"),
    (["--workers", "257"], "--workers"),
    (["--sessions", str(usable_cpus().cpus + 1)], "--sessions"),
    (["--retry-seconds", "nan"], "--retry-seconds"),
    (["--retry-seconds", "-1"], "--retry-seconds"),
    (["--metrics-port", "99999"], "--metrics-port"),
    (["--metrics-port", "0"], "--metrics-port"),
    (["--shard", "0/100001"], "shards"),
    (["--shard", "\u00b2/3"], "--shard"),
    (["--devices", "0,\u00b2"], "--devices"),
    (["--server", "127.0.0.1:1", "--retry-seconds", "0", "--inflight", "257"], "--inflight"),
    (["--server", "127.0.0.1:99999", "--retry-seconds", "0"], "--server"),
])
def test_a_number_option_out_of_bounds_is_one_line_naming_it_exit_1_and_nothing_written(
        clip: Path, tmp_path: Path, model_path: Path, flags: list[str], option: str) -> None:
    out = tmp_path / "out"
    done = bulk(str(clip), "--out", str(out), "--model", str(model_path), "--no-progress", *flags)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and option in lines[0], done.stderr
    assert not out.exists()


def test_fps_far_above_the_frame_rate_infers_every_frame_once_without_hanging(
        clip: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    done = bulk(str(clip), "--out", str(out), "--model", str(model_path), "--no-progress", "--fps", "1e12",
                timeout=90)  # fcce41e walked the grid point by point: 10^12 steps for this 1-second clip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "a.mp4.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12))
    assert files(out)["a.mp4"]["frames"] == 12


def test_a_shard_summary_that_parses_but_is_not_one_is_named_in_one_line_and_counts_as_missing(
        clip: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.shard-0-of-2.json").write_text("{}\n")  # another tool's, or a bug's
    done = bulk(str(clip), "--out", str(out), "--model", str(model_path), "--no-progress", "--shard", "1/2")
    assert "Traceback" not in done.stderr
    named = [line for line in done.stderr.splitlines() if "summary.shard-0-of-2.json" in line]
    assert len(named) == 1 and "not a shard summary" in named[0], done.stderr
    assert done.returncode == 0  # this shard's own files are all ok
    assert json.loads((out / "summary.shard-1-of-2.json").read_text())["totals"]["files"] >= 0
    assert not (out / "summary.json").exists()  # shard 0's summary is missing: nothing merged
    merge = subprocess.run([sys.executable, "-m", "client.summary", str(out)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert merge.returncode == 2 and "Traceback" not in merge.stderr, merge.stderr
    assert json.loads((out / "summary.json").read_text())["shards"]["missing"] == [0]


# --- 16: a closed stderr, OUT inside DIR, names, every entry, --model DIR -----------------------
def test_a_closed_stderr_or_one_nobody_reads_leaves_the_exit_code_the_runs_own(
        clip: Path, tmp_path: Path, model_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `2>&1 | head` after head has gone: every write is EPIPE
    try:
        broken = bulk(str(clip), "--out", str(tmp_path / "broken"), "--model", str(model_path), stderr=write_end)
    finally:
        os.close(write_end)
    closed = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m", "client.bulk", str(clip),
                             "--out", str(tmp_path / "closed"), "--model", str(model_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 0, broken.stdout
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert closed.stdout == ""  # the table does not move to stdout
    for out in ("broken", "closed"):
        assert files(tmp_path / out)["a.mp4"]["status"] == "ok"


def test_out_inside_dir_is_not_searched_for_inputs_and_the_log_says_so_once(
        clip: Path, model_path: Path) -> None:
    out = clip / "results"
    assert bulk(str(clip), "--out", str(out), "--model", str(model_path), "--no-progress").returncode == 0
    write_video(out / "a.mp4.annotated.mp4", frames=4)  # what client.render writes beside the outputs
    again = bulk(str(clip), "--out", str(out), "--model", str(model_path), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert sorted(files(out)) == ["a.mp4"]
    said = [line for line in again.stderr.splitlines() if "output folder" in line]
    assert len(said) == 1 and str(out) in said[0], again.stderr


def test_control_characters_in_names_are_escaped_in_the_table_and_the_log(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "red\x1b[31mX\nrow.mp4", frames=6)
    cut = write_video(src / "cut\x1b[2J.mp4", frames=48, faststart=True)  # declares 48 frames
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # ... holds about half: a warning line
    done = bulk(str(src), "--out", str(tmp_path / "out"), "--model", str(model_path), "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "\x1b" not in done.stderr
    assert "red\\x1b[31mX\\x0arow.mp4  ok" in done.stderr  # one table row, not two
    assert [line for line in done.stderr.splitlines() if line.startswith("cut\\x1b[2J.mp4: ")], done.stderr
    assert sorted(files(tmp_path / "out")) == ["cut\x1b[2J.mp4", "red\x1b[31mX\nrow.mp4"]  # JSON keeps the names


def test_every_entry_under_dir_is_in_the_summary_saying_what_it_is(clip: Path, tmp_path: Path,
                                                                     model_path: Path) -> None:
    os.mkfifo(clip / "pipe.mp4")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(clip / "control.sock"))
    (clip / "null.mp4").symlink_to("/dev/null")
    (clip / "gone.mp4").symlink_to(tmp_path / "nothing-here.mp4")
    try:
        done = bulk(str(clip), "--out", str(tmp_path / "out"), "--model", str(model_path), "--no-progress")
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    found = {path: (f["status"], f["error"]) for path, f in files(tmp_path / "out").items()}
    assert found == {
        "a.mp4": ("ok", None),
        "pipe.mp4": ("skipped", "not a regular file (FIFO)"),
        "control.sock": ("skipped", "not a regular file (socket)"),
        "null.mp4": ("skipped", "not a regular file (a symlink to a character device)"),
        "gone.mp4": ("skipped", "broken symlink"),
    }


def test_model_naming_a_directory_says_so_and_which_file_to_pass(clip: Path, tmp_path: Path,
                                                                   model_path: Path) -> None:
    done = bulk(str(clip), "--out", str(tmp_path / "out"), "--model", str(model_path.parent), "--no-progress")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "a directory, not a model file" in lines[0], done.stderr
    assert f"--model {model_path}" in lines[0]
    assert not (tmp_path / "out").exists()
