"""Reruns, concurrent runs and a hostile OUT (issue #24 findings 1, 2, 8, 11, 12, 13, 16): real
videos, real processes, real signals, a real full tmpfs and a real read-only mount.

The invariant of a rerun: until a video's new output is complete and recorded, its earlier
output, sidecar and resume record stay byte for byte as they were; once recorded, the record
describes what is on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from client import outfiles
from client.resume import ResumeLedger

from .conftest import Processes
from .test_bulk import bulk_main, entries, read_jsonl
from .test_faults import leftovers, wait_for
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]
LONG_FRAMES = 240
VIDEOS = ("long.mp4", "short1.mp4", "short2.mp4")


def make_src(src: Path) -> Path:
    """One long video and two short ones (as tests/test_faults.py): the long one is in flight
    whenever a stopped run stops."""
    src.mkdir(parents=True, exist_ok=True)
    write_video(src / "long.mp4", frames=LONG_FRAMES, size_wh=(160, 96), gop=24)
    write_video(src / "short1.mp4", frames=6, size_wh=(128, 96))
    write_video(src / "short2.mp4", frames=6, size_wh=(128, 96))
    return src


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_src(tmp_path_factory.mktemp("rerun") / "videos")


@pytest.fixture(scope="module")
def done(src: Path, tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """An OUT where a first run completed every video (copied, never changed, by each test)."""
    out = tmp_path_factory.mktemp("done") / "out"
    rc, summary = bulk_main(src, out, model_path, "--workers", "2", "--no-split")
    assert rc == 0 and all(f["status"] == "ok" for f in summary["files"])
    return out


def copy_of(done: Path, out: Path) -> Path:
    shutil.copytree(done, out, symlinks=True)
    return out


def record_path(out: Path, rel: str) -> Path:
    return out / ".framestream" / "done" / f"{rel}.json"


def triples(out: Path) -> dict[str, dict[str, bytes | None]]:
    """Each video's output, sidecar and record, as bytes (None: missing)."""
    def read(p: Path) -> bytes | None:
        return p.read_bytes() if p.is_file() else None

    return {rel: {"output": read(out / f"{rel}.jsonl"), "meta": read(out / f"{rel}.meta.json"),
                  "record": read(record_path(out, rel))} for rel in VIDEOS}


def without_identities(triples: dict[str, dict[str, bytes | None]]) -> dict[str, dict[str, object]]:
    """``triples`` with each record's output identities (inode, ctime: another file's when the
    video is redone) left out, so that a redone video compares equal to its first run."""
    def bare(record: bytes | None) -> object:
        if record is None:
            return None
        doc = json.loads(record)
        for o in doc["outputs"]:
            o.pop("identity", None)
        return doc

    return {rel: {**files, "record": bare(files["record"])} for rel, files in triples.items()}


def describes(out: Path, record: bytes) -> bool:
    """The record's outputs are on disk with its size and digest."""
    doc = json.loads(record)
    for o in doc["outputs"]:
        path = out / o["name"]
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != o["sha256"]:
            return False
    return doc["frames"] >= 0


def assert_kept_or_replaced(out: Path, before: dict[str, dict[str, bytes | None]]) -> None:
    """Every earlier complete output with its sidecar and record is byte-identical, unless the
    rerun completed that video, in which case its new record describes its new output. The long
    video never completed in the rerun: it must be exactly as it was."""
    after = triples(out)
    assert after["long.mp4"] == before["long.mp4"], "the earlier complete output of long.mp4 was touched"
    for rel in VIDEOS:
        if after[rel]["record"] == before[rel]["record"]:
            assert after[rel] == before[rel], f"{rel}: its record is the earlier one but its files changed"
        else:
            assert after[rel]["record"] is not None and describes(out, after[rel]["record"]), rel


def start_slowed(src: Path, out: Path, model: Path, ready: Path, *extra: str, delay_s: float = 0.1,
                 ) -> subprocess.Popen:
    """The real bulk CLI, its backend slowed once a record exists (tests/fault_runner.py): in a
    rerun that is from its first batch, so every video is still in flight when ``ready`` appears."""
    cmd = [sys.executable, "-m", "tests.fault_runner", str(ready), str(delay_s), "--", str(src), "--out", str(out),
           "--model", str(model), "--no-progress", "--workers", "2", "--no-split", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_for_writing(out: Path, name: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until this run has opened ``name``'s output (its writer opens at the video's first frame): the
    first batch of a rerun may be a short video's alone, and a stop before any of the long one's
    frames has arrived leaves it no partial."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(out.rglob(f".{name}*.tmp")):
            return
        time.sleep(0.02)
    raise AssertionError(f"no output of {name} opened within {timeout_s:g} s (exit {proc.poll()})")


def bulk_cli(src: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model),
                           "--no-progress", "--workers", "2", "--no-split", *extra],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error")]


def finish_rerun(src: Path, out: Path, model: Path, *extra: str) -> None:
    """A later rerun to completion works: every video ok, nothing partial or temporary left."""
    rc, summary = bulk_main(src, out, model, "--workers", "2", "--no-split", *extra)
    assert rc == 0, summary
    files = entries(summary)
    assert all(f["status"] == "ok" for f in files.values())
    assert files["long.mp4"]["frames"] == LONG_FRAMES
    assert not list(out.rglob("*.partial")) and not [p for p in (out / "partial").rglob("*") if p.is_file()]
    assert not leftovers(out)


# Finding 1: an interrupted or failed rerun deletes the earlier complete outputs ----------------


RERUN_OPTIONS = {"conf": ("--conf", "0.5"), "parquet": ("--format", "parquet"), "overwrite": ("--overwrite",)}


@pytest.mark.parametrize("option", sorted(RERUN_OPTIONS))
def test_a_rerun_with_other_options_stopped_by_sigterm_leaves_every_earlier_output_sidecar_and_record(
        src: Path, done: Path, tmp_path: Path, model_path: Path, processes: Processes, option: str) -> None:
    out, ready = copy_of(done, tmp_path / "out"), tmp_path / "ready"
    before = triples(out)
    proc = processes.own(start_slowed(src, out, model_path, ready, *RERUN_OPTIONS[option]))
    wait_for(ready, proc)
    wait_for_writing(out, "long.mp4", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    long = entries(json.loads((out / "summary.json").read_text()))["long.mp4"]
    # this run's frames of it, if any had been written when the stop came: a partial output
    assert long["status"] == "error" and bool(long["partial_output"]) == (long["frames"] > 0), long
    assert_kept_or_replaced(out, before)
    finish_rerun(src, out, model_path, *RERUN_OPTIONS[option])


def test_a_rerun_with_other_options_killed_by_sigkill_leaves_every_earlier_output_sidecar_and_record(
        src: Path, done: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready = copy_of(done, tmp_path / "out"), tmp_path / "ready"
    before = triples(out)
    proc = processes.own(start_slowed(src, out, model_path, ready, "--conf", "0.5"))
    wait_for(ready, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert_kept_or_replaced(out, before)
    finish_rerun(src, out, model_path, "--conf", "0.5")  # the killed run's temporaries are gone after it


def test_a_rerun_with_other_options_on_a_full_disk_leaves_every_earlier_output_sidecar_and_record(
        src: Path, done: Path, model_path: Path, tmpfs) -> None:
    disk = tmpfs("16m")
    out = copy_of(done, disk / "out")
    before = triples(out)
    filler = disk / "filler"
    with open(filler, "wb") as f:  # the disk really fills up
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    run = bulk_cli(src, out, model_path, "--conf", "0.5")
    assert run.returncode == 2 and "No space left" in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert_kept_or_replaced(out, before)
    filler.unlink()
    finish_rerun(src, out, model_path, "--conf", "0.5")


@pytest.mark.parametrize("which", ["meta", "record"])
def test_a_rerun_killed_between_publishing_an_output_and_committing_its_record_is_redone_not_trusted(
        src: Path, done: Path, tmp_path: Path, model_path: Path, which: str) -> None:
    out = copy_of(done, tmp_path / "out")
    before = triples(out)
    crash = subprocess.run([sys.executable, "-m", "tests.crash_runner", "short1.mp4", which, "--", str(src), "--out",
                            str(out), "--model", str(model_path), "--no-progress", "--conf", "0.5"],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-2000:]
    assert triples(out)["short1.mp4"]["record"] == before["short1.mp4"]["record"]  # killed before the commit point
    assert triples(out)["short1.mp4"]["output"] != before["short1.mp4"]["output"]  # the --conf 0.5 output
    run = bulk_cli(src, out, model_path)  # the earlier options: its record matches them, its output does not
    assert run.returncode == 0, run.stderr[-2000:]
    assert not entries(json.loads((out / "summary.json").read_text()))["short1.mp4"]["resumed"]
    assert "its output is damaged" in run.stderr
    # redone with the same options: the same bytes, described by its record (which names the new file's identity)
    assert without_identities(triples(out)) == without_identities(before)
    assert not leftovers(out)


def test_a_rerun_whose_record_cannot_be_committed_after_publishing_puts_back_the_earlier_output_and_sidecar(
        src: Path, done: Path, tmp_path: Path, model_path: Path) -> None:
    """The record's folder turns read-only for real just as short1.mp4's record is committed, after
    its new output and sidecar were renamed into place (tests/crash_runner.py): both go back."""
    out = copy_of(done, tmp_path / "out")
    before = triples(out)
    ledger = out / ".framestream" / "done"
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(ledger), str(ledger)], check=True)
    try:
        run = subprocess.run([sys.executable, "-m", "tests.crash_runner", "short1.mp4", "record-ro", "--", str(src),
                              "--out", str(out), "--model", str(model_path), "--no-progress", "--conf", "0.5"],
                             capture_output=True, text=True, timeout=600, cwd=ROOT)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ledger)], check=False)
        else:
            ledger.chmod(0o755)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "Read-only file system" in run.stderr and "short1.mp4.json" in run.stderr
    assert entries(json.loads((out / "summary.json").read_text()))["short1.mp4"]["status"] != "ok"
    assert triples(out)["short1.mp4"] == before["short1.mp4"]  # the earlier output and sidecar are back
    assert describes(out, before["short1.mp4"]["record"])
    after = triples(out)
    for rel in VIDEOS:  # each video as it was, or completed (before short1.mp4) and described by its new record
        assert after[rel] == before[rel] or describes(out, after[rel]["record"]), rel
    finish_rerun(src, out, model_path, "--conf", "0.5")  # which sweeps what the read-only folder kept


# Finding 2: two runs on one OUT ------------------------------------------------------------------


def first_to_end(procs: list[subprocess.Popen], held: list[Path], timeout_s: float = 600.0,
                 ) -> subprocess.Popen | None:
    """The first of ``procs`` to exit; None once each has created its ``held`` file (all of them
    are past OUT's lock, held before their summary). Waits for an event, not a length of time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                return proc
        if all(path.exists() for path in held):
            return None
        time.sleep(0.02)
    pytest.fail(f"none of the runs ended within {timeout_s:.0f} s")


def test_two_runs_started_at_once_on_one_out_one_works_the_other_exits_1_naming_the_holder(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, go, held = tmp_path / "out", tmp_path / "go", [tmp_path / f"ready{i}" for i in range(2)]
    # Each run holds before writing its summary until GO (tests/signal_runner.py), OUT's lock still
    # held: the one that takes the lock cannot finish before the other has tried and exited.
    procs = [processes.start([sys.executable, "-m", "tests.signal_runner", "summary", str(ready), str(go), "--",
                              str(src), "--out", str(out), "--model", str(model_path), "--no-progress",
                              "--workers", "2", "--no-split"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for ready in held]
    refused = first_to_end(procs, held)
    go.touch()
    assert refused is not None, "both runs got past OUT's lock"
    results = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], [err[-2000:] for _, err in results]
    assert refused.returncode == 1
    winner, loser = (procs[0], procs[1]) if codes[0] == 0 else (procs[1], procs[0])
    stderr = results[procs.index(loser)][1]
    assert "Traceback" not in stderr
    assert len(error_lines(stderr)) == 1 and f"pid {winner.pid}" in error_lines(stderr)[0], stderr
    rc, again = bulk_main(src, out, model_path)  # nothing lost: every video resumes, its output verified
    assert rc == 0 and all(f["resumed"] for f in again["files"])


def test_a_second_run_while_the_first_is_paused_exits_1_and_the_first_then_completes(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    first = processes.own(start_slowed(src, out, model_path, ready))
    wait_for(ready, first)
    first.send_signal(signal.SIGSTOP)  # Ctrl-Z
    try:
        second = bulk_cli(src, out, model_path)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert len(error_lines(second.stderr)) == 1 and f"pid {first.pid}" in second.stderr
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    rc, again = bulk_main(src, out, model_path)
    assert rc == 0 and all(f["resumed"] for f in again["files"])


def test_shards_of_a_job_exclude_an_unsharded_run_and_a_second_copy_of_the_same_shard(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    (out / ".framestream" / "done").mkdir(parents=True)  # a record of nothing: the runner slows at once
    (out / ".framestream" / "done" / "elsewhere.mp4.json").write_text("{}")
    shard = processes.own(start_slowed(src, out, model_path, ready, "--shard", "0/2"))  # long.mp4 (1/2: the short ones)
    wait_for(ready, shard)
    shard.send_signal(signal.SIGSTOP)
    try:
        unsharded = bulk_cli(src, out, model_path)
        again = bulk_cli(src, out, model_path, "--shard", "0/2")
        other = bulk_cli(src, out, model_path, "--shard", "1/2")
    finally:
        shard.send_signal(signal.SIGCONT)
    for refused in (unsharded, again):
        assert refused.returncode == 1 and len(error_lines(refused.stderr)) == 1, refused.stderr[-2000:]
        assert "shard 0/2" in refused.stderr and f"pid {shard.pid}" in refused.stderr
    assert other.returncode == 0, other.stderr[-2000:]  # the job's other shard runs beside it
    _, stderr = shard.communicate(timeout=600)
    assert shard.returncode == 0, stderr[-2000:]
    merged = json.loads((out / "summary.json").read_text())
    assert merged["totals"]["ok"] == len(VIDEOS)


# Finding 8: a source that changes during the run ----------------------------------------------


def test_a_source_that_changes_during_the_run_is_an_error_without_a_record(
        tmp_path: Path, model_path: Path, processes: Processes) -> None:
    src, out, ready = make_src(tmp_path / "videos"), tmp_path / "out", tmp_path / "ready"
    proc = processes.own(start_slowed(src, out, model_path, ready))
    wait_for(ready, proc)  # a short video is complete; the long one is being decoded and inferred
    with open(src / "long.mp4", "ab") as f:  # a recording still being written
        f.write(b"\0" * 4096)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    long = entries(json.loads((out / "summary.json").read_text()))["long.mp4"]
    assert long["status"] == "error" and "the source changed during the run" in long["error"]
    assert not (out / "long.mp4.jsonl").exists() and not record_path(out, "long.mp4").exists()
    rc, again = bulk_main(src, out, model_path, "--no-split")
    assert not entries(again)["long.mp4"]["resumed"]  # redone, not trusted


def test_the_record_holds_the_source_identity_taken_when_its_decoding_started(
        tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    video = write_video(src / "a.mp4", frames=6)
    before = video.stat()
    stage, touched = ResumeLedger.stage, []

    def touch_then_stage(self: ResumeLedger, path: Path, rel: str, *args, **kwargs):
        """The source is touched after its frames were checked and before its record is staged:
        the identity taken now is not the one its frames were decoded from."""
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        touched.append(rel)
        return stage(self, path, rel, *args, **kwargs)

    monkeypatch.setattr(ResumeLedger, "stage", touch_then_stage)
    rc, summary = bulk_main(src, out, model_path)
    assert rc == 0 and touched == ["a.mp4"], summary
    after = video.stat()
    assert (after.st_mtime_ns, after.st_ctime_ns) != (before.st_mtime_ns, before.st_ctime_ns)
    source = json.loads(record_path(out, "a.mp4").read_text())["source"]
    assert source == {"size": before.st_size, "mtime_ns": before.st_mtime_ns, "ctime_ns": before.st_ctime_ns,
                      "inode": before.st_ino}
    monkeypatch.undo()
    rc, again = bulk_main(src, out, model_path)
    assert rc == 0 and not entries(again)["a.mp4"]["resumed"]  # the later change is seen: redone, not trusted


def test_a_source_whose_attributes_change_during_the_run_but_not_its_bytes_is_complete(
        tmp_path: Path, model_path: Path, processes: Processes) -> None:
    src, out, ready = make_src(tmp_path / "videos"), tmp_path / "out", tmp_path / "ready"
    proc = processes.own(start_slowed(src, out, model_path, ready))
    wait_for(ready, proc)
    before = (src / "long.mp4").stat()
    (src / "long.mp4").chmod(0o600)  # a backup tool or a chmod: its ctime moves, not a byte
    os.link(src / "long.mp4", tmp_path / "hard-link")
    assert (src / "long.mp4").stat().st_ctime_ns != before.st_ctime_ns
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert entries(json.loads((out / "summary.json").read_text()))["long.mp4"]["status"] == "ok"


# Finding 11: a video named like another's partial output -------------------------------------


def test_a_video_named_like_another_videos_partial_output_keeps_its_own_output(tmp_path: Path,
                                                                               model_path: Path) -> None:
    src, out = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    trunc = write_video(src / "x.mkv", frames=48, gop=12)
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])  # fails, keeping its frames
    write_video(tmp_path / "y.mkv", frames=6).rename(src / "x.mkv.partial")  # a whole video with that name
    rc, summary = bulk_main(src, out, model_path)
    files = entries(summary)
    damaged, whole = files["x.mkv"], files["x.mkv.partial"]
    assert rc == 2 and damaged["status"] == "error" and whole["status"] == "ok", files
    assert damaged["partial_output"] not in whole["outputs"]
    assert len(read_jsonl(out / damaged["partial_output"])) == damaged["frames"] > 0
    assert [r["frame"] for r in read_jsonl(out / whole["outputs"][0])] == list(range(6))
    rc, again = bulk_main(src, out, model_path)
    assert entries(again)["x.mkv.partial"]["resumed"]  # its output is the one its record describes


# Finding 12: a record that parses but is not valid ----------------------------------------------


@pytest.mark.parametrize("damage", [{"frames": -5}, {"frames": "6"}, {"frames": True},
                                    {"outputs": [{"name": "../x", "size": 1, "sha256": "0" * 64}]}])
def test_a_ledger_record_that_is_not_valid_is_redone_and_says_why(
        src: Path, done: Path, tmp_path: Path, model_path: Path, damage: dict) -> None:
    out = copy_of(done, tmp_path / "out")
    record = record_path(out, "short1.mp4")
    record.write_text(json.dumps({**json.loads(record.read_text()), **damage}))
    run = bulk_cli(src, out, model_path)
    assert run.returncode == 0, run.stderr[-2000:]
    short1 = entries(json.loads((out / "summary.json").read_text()))["short1.mp4"]
    assert not short1["resumed"] and short1["frames"] == 6
    assert "redoing 1 video: its record is not valid" in run.stderr


# Finding 13: the summary's temporary and symlinks ------------------------------------------------


def test_a_symlink_planted_at_the_summarys_temporary_is_never_written_through(
        src: Path, done: Path, tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, outside = copy_of(done, tmp_path / "out"), tmp_path / "outside"
    outside.mkdir()
    planted = f".summary.json.{os.getpid()}-000000.tmp"  # a temporary name of this (the running) process
    os.symlink(outside / "stolen.json", out / planted)
    temp_name, offered = outfiles.temp_name, []

    def planted_first(name: str) -> str:
        """The summary's first temporary name is the planted link's (a name guessed right)."""
        if name == "summary.json" and not offered:
            offered.append(name)
            return planted
        return temp_name(name)

    monkeypatch.setattr(outfiles, "temp_name", planted_first)
    rc, summary = bulk_main(src, out, model_path)
    assert offered, "the summary was written without drawing a temporary name"
    assert rc == 0 and all(f["resumed"] for f in summary["files"])
    assert list(outside.iterdir()) == []
    assert not (out / "summary.json").is_symlink() and (out / planted).is_symlink()


# Finding 16: OUT or the ledger folder not writable ----------------------------------------------


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for real: a read-only bind mount as root (who ignores modes), else its mode."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", str(path)], check=False)
    else:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)


def test_an_out_that_cannot_be_written_is_one_line_and_exit_1_before_any_decoding(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with read_only(out):
        run = bulk_cli(src, out, model_path)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert len(error_lines(run.stderr)) == 1 and str(out) in error_lines(run.stderr)[0]
    assert not any(v in run.stderr for v in VIDEOS)  # no video was started
    assert list(out.iterdir()) == []


def test_a_ledger_folder_that_cannot_be_written_leaves_no_output_looking_complete(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".framestream" / "done").mkdir(parents=True)
    with read_only(out / ".framestream" / "done"):
        run = bulk_cli(src, out, model_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    files = entries(json.loads((out / "summary.json").read_text()))
    assert all(f["status"] != "ok" for f in files.values())
    for rel in VIDEOS:  # nothing that looks complete; what was inferred is kept as partial
        assert not (out / f"{rel}.jsonl").exists() and not (out / f"{rel}.meta.json").exists()
    assert any(f["partial_output"] for f in files.values())
    rerun = bulk_cli(src, out, model_path)
    assert rerun.returncode == 0 and all(f["status"] == "ok"
                                         for f in json.loads((out / "summary.json").read_text())["files"])


# Finding 1 with a server outage ------------------------------------------------------------------


@pytest.mark.triton
def test_a_rerun_with_other_options_cut_off_by_a_server_outage_leaves_every_earlier_output_sidecar_and_record(
        src: Path, done: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    from .test_triton import inferences, server_args, wait_for as wait_until
    from .triton_server import free_ports, make_repository, start_server

    out = copy_of(done, tmp_path / "out")
    before = triples(out)
    server = start_server(make_repository(tmp_path / "repository", model_path), free_ports(3))
    try:
        proc = processes.start([sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--no-progress",
                                "--workers", "2", "--no-split", "--conf", "0.5", *server_args(server)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        wait_until("the server inferring the rerun's frames", lambda: inferences(server) > 0)
        proc.send_signal(signal.SIGSTOP)  # frozen mid-run, however fast the machine
        server.kill()
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert "unreachable" in json.loads((out / "summary.json").read_text())["stopped"]
    assert_kept_or_replaced(out, before)
    finish_rerun(src, out, model_path, "--conf", "0.5")
