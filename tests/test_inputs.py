"""Inputs other than one directory: files, globs, ``--from-list``; names stable and collision-free;
bad input is one line, exit 1, and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import bulk

from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]


def run(model: Path, out: Path, *inputs: str | Path) -> tuple[int, dict]:
    rc = bulk.main([*map(str, inputs), "--out", str(out), "--model", str(model), "--no-progress"])
    summary = out / "summary.json"
    return rc, json.loads(summary.read_text()) if summary.exists() else {}


def cli(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "client.bulk", "--no-progress", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env, input=stdin)


def statuses(summary: dict) -> dict[str, str]:
    return {f["path"]: f["status"] for f in summary["files"]}


def tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    src = tmp_path / "clips"
    for rel in ("a.mp4", "b.mp4", "night/a.mp4", "day/a.mp4"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(src / rel, frames=2, size_wh=(64, 48))
    return src


def test_one_directory_names_outputs_as_before_and_a_glob_of_its_files_resumes_them(
        clips: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    rc, summary = run(model_path, out, clips)
    assert rc == 0 and summary["inputs"] == {"root": str(clips), "dirs": 1, "files": 0}
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jsonl"))
    assert names == ["a.mp4.jsonl", "b.mp4.jsonl", "day/a.mp4.jsonl", "night/a.mp4.jsonl"]
    records = sorted(p.relative_to(out).as_posix() for p in (out / ".framestream" / "done").rglob("*.json"))
    assert records == [f".framestream/done/{n[:-1]}" for n in names]  # a.mp4.json: the ledger's names unchanged
    # The glob (expanded by framestream, not a shell) names its files as the directory does: resumed.
    rc, again = run(model_path, out, f"{clips}/*.mp4")
    assert rc == 0 and statuses(again) == {"a.mp4": "ok", "b.mp4": "ok"}
    assert all(f["resumed"] for f in again["files"])


def test_same_named_files_from_two_folders_get_separate_outputs(clips: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    rc, summary = run(model_path, out, clips / "night" / "a.mp4", clips / "day" / "a.mp4", clips / "a.mp4")
    assert rc == 0 and summary["inputs"]["root"] == str(clips)
    assert statuses(summary) == {"a.mp4": "ok", "day/a.mp4": "ok", "night/a.mp4": "ok"}
    for rel in ("a.mp4", "day/a.mp4", "night/a.mp4"):
        assert len((out / f"{rel}.jsonl").read_text().splitlines()) == 2


def test_a_single_file_writes_its_output_under_its_own_name(clips: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    rc, summary = run(model_path, out, clips / "night" / "a.mp4")
    assert rc == 0 and statuses(summary) == {"a.mp4": "ok"}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.mp4.jsonl", "a.mp4.meta.json",
                                                                                  "report.html", "summary.json"]


def test_a_file_named_twice_or_inside_a_given_folder_is_done_once_and_a_hidden_one_named_is_taken(
        clips: Path, tmp_path: Path, model_path: Path) -> None:
    hidden = write_video(clips / "night" / ".secret.mp4", frames=2, size_wh=(64, 48))
    out = tmp_path / "out"
    rc, summary = run(model_path, out, clips / "night", clips / "night" / "a.mp4", clips / "night" / "a.mp4",
                      clips / "day", clips / "day" / "..", hidden)
    assert rc == 0
    # "day/.." is clips itself: its walk holds every other input, which it names as the directory run does.
    assert statuses(summary) == {"a.mp4": "ok", "b.mp4": "ok", "day/a.mp4": "ok", "night/a.mp4": "ok",
                                 "night/.secret.mp4": "ok"}


def test_from_list_reads_one_path_a_line_from_a_file_or_stdin(clips: Path, tmp_path: Path, model_path: Path) -> None:
    spaced = write_video(clips / "day" / "with space.mp4", frames=2, size_wh=(64, 48))
    listing = tmp_path / "list.txt"
    # Relative paths from the current directory; blank lines and CRLF endings are fine.
    listing.write_bytes(b"clips/night/a.mp4\r\n\nclips/day/with space.mp4\n" + str(clips / "b.mp4").encode() + b"\n")
    done = cli("--from-list", str(listing), "--out", "out", "--model", str(model_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert statuses(summary) == {"b.mp4": "ok", "day/with space.mp4": "ok", "night/a.mp4": "ok"}
    assert spaced.exists() and (tmp_path / "out" / "day" / "with space.mp4.jsonl").is_file()
    piped = cli("--from-list", "-", "--out", "out", "--model", str(model_path), cwd=tmp_path,
                stdin="clips/night/a.mp4\nclips/b.mp4\n")
    assert piped.returncode == 0, piped.stderr
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert statuses(again) == {"b.mp4": "ok", "night/a.mp4": "ok"} and all(f["resumed"] for f in again["files"])


@pytest.mark.parametrize(("args", "says"), [
    (["clips/*.mov"], "clips/*.mov: no file matches this pattern"),
    (["clips/**/*.avi"], "clips/**/*.avi: no file matches this pattern"),
    (["clips/nope.mp4"], "clips/nope.mp4: not a directory or a file"),
    (["clips/a.mp4", "gone/b.mp4"], "gone/b.mp4: not a directory or a file"),
    (["--from-list", "list.txt"], "--from-list list.txt: 2 of 3 paths do not exist (line 2: 'clips/missing.mp4', "
                                  "line 4: 'clips/also missing.mp4')"),
    (["--from-list", "empty.txt"], "--from-list empty.txt: lists no paths"),
    (["--from-list", "absent.txt"], "--from-list absent.txt: cannot read it (No such file or directory)"),
    ([], "no input: give a directory of videos, video files, a glob or --from-list FILE"),
])
def test_bad_input_is_one_line_exit_1_and_leaves_an_earlier_run_untouched(
        clips: Path, tmp_path: Path, model_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "list.txt").write_text("clips/a.mp4\nclips/missing.mp4\n\nclips/also missing.mp4\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    out = tmp_path / "out"
    assert run(model_path, out, clips / "b.mp4")[0] == 0
    before = tree(out)
    done = cli(*args, "--out", "out", "--model", str(model_path), cwd=tmp_path)
    assert done.returncode == bulk.EXIT_USAGE == 1
    assert done.stderr.strip().startswith("error: ") and says in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert tree(out) == before  # no summary rewritten, no output or record touched
    fresh = cli(*args, "--out", "fresh", "--model", str(model_path), cwd=tmp_path)
    assert fresh.returncode == 1 and not (tmp_path / "fresh").exists()
