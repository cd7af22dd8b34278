"""Faults as real events in real processes: what exit code, what summary.json says, what a
rerun redoes. Each test here is a row of the table in docs/faults.md."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from client import backends
from client.infer import BatchOutput

from .conftest import Processes
from .fault_runner import Delegating
from .test_bulk import bulk_main, entries, read_jsonl
from .videos import write_video

LONG_FRAMES = 240


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One long video and two short ones: with two decoders the short ones finish first."""
    src = tmp_path_factory.mktemp("faults")
    write_video(src / "long.mp4", frames=LONG_FRAMES, size_wh=(160, 96), gop=24)
    write_video(src / "short1.mp4", frames=6, size_wh=(128, 96))
    write_video(src / "short2.mp4", frames=6, size_wh=(128, 96))
    return src


def start_slowed_run(src: Path, out: Path, model: Path, ready: Path, *,
                     preexec_fn: Callable[[], object] | None = None) -> subprocess.Popen:
    """The bulk CLI in a subprocess whose backend slows once a video is complete (tests/fault_runner.py)."""
    cmd = [sys.executable, "-m", "tests.fault_runner", str(ready), "0.1", "--", str(src), "--out", str(out),
           "--model", str(model), "--no-progress", "--workers", "2", "--no-split"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1], preexec_fn=preexec_fn)


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Block until ``path`` exists (the event); fail if the process ended first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the event: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name} within {timeout_s:.0f} s")
        time.sleep(0.02)


def leftovers(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_keeps_partials_writes_the_summary_and_a_rerun_finishes_exactly_the_rest(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes, sig: int, code: int) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    proc = processes.own(start_slowed_run(src, out, model_path, ready))
    wait_for(ready, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    files = entries(summary)
    assert set(files) == {"long.mp4", "short1.mp4", "short2.mp4"}  # every input has its entry
    assert summary["stopped"] and "interrupted" in summary["stopped"]
    long = files["long.mp4"]
    assert long["status"] == "error" and not (out / "long.mp4.jsonl").exists()
    partial = read_jsonl(out / long["partial_output"])
    assert long["partial_output"] == "long.mp4.jsonl.partial"
    assert 0 < len(partial) == long["frames"] < LONG_FRAMES
    assert [r["frame"] for r in partial] == list(range(len(partial)))
    done = {p for p, f in files.items() if f["status"] == "ok"}
    assert done and all(f["status"] in ("ok", "error", "not_processed") for f in files.values())
    for rel in done:
        assert len(read_jsonl(out / f"{rel}.jsonl")) == 6
    assert not leftovers(out)

    rc, again = bulk_main(src, out, model_path, "--workers", "2", "--no-split")
    assert rc == 0
    resumed = {p for p, f in entries(again).items() if f["resumed"]}
    assert resumed == done
    assert len(read_jsonl(out / "long.mp4.jsonl")) == LONG_FRAMES
    assert not (out / "long.mp4.jsonl.partial").exists()


def test_sigkill_loses_nothing_complete_and_a_rerun_redoes_only_the_unfinished(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    proc = processes.own(start_slowed_run(src, out, model_path, ready))
    wait_for(ready, proc)
    proc.kill()
    proc.wait(timeout=60)
    complete = {p.name[: -len(".jsonl")] for p in out.glob("*.jsonl")}  # a partial output ends in .partial
    assert complete and "long.mp4" not in complete
    rc, again = bulk_main(src, out, model_path, "--workers", "2", "--no-split")
    assert rc == 0
    files = entries(again)
    assert {p for p, f in files.items() if f["resumed"]} == complete
    assert files["long.mp4"]["status"] == "ok" and files["long.mp4"]["frames"] == LONG_FRAMES
    _, clean = bulk_main(src, tmp_path / "clean", model_path)
    assert (out / "long.mp4.jsonl").read_text() == (tmp_path / "clean" / "long.mp4.jsonl").read_text()
    assert not leftovers(out)


def test_a_full_disk_stops_the_run_cleanly_and_a_rerun_with_space_resumes(
        src: Path, tmp_path: Path, model_path: Path, tmpfs) -> None:
    small_tmpfs = tmpfs("96k")
    out = small_tmpfs / "out"
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model_path),
           "--no-progress", "--workers", "2", "--no-split"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "No space left" in run.stderr
    assert not (out / "long.mp4.jsonl").exists()  # nothing incomplete looks complete
    complete_before = {p.name[: -len(".jsonl")] for p in out.glob("*.jsonl")}  # a partial output ends in .partial
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    files = entries(json.loads((out / "summary.json").read_text()))
    assert {p for p, f in files.items() if f["resumed"]} == complete_before
    assert all(f["status"] == "ok" for f in files.values())
    assert files["long.mp4"]["frames"] == LONG_FRAMES
    assert not leftovers(out)


class _BreaksAfterInference(Delegating):
    """The real embedded backend, except that its second batch comes back malformed
    (``num_detections`` without its last axis): the failure happens after inference."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.calls = 0

    def infer(self, lane, batch):
        out = self.inner.infer(lane, batch)
        self.calls += 1
        return BatchOutput(out.detections, out.num_detections[:, 0]) if self.calls == 2 else out


def test_an_error_after_inference_fails_that_batch_s_files_and_the_run_goes_on(
        src: Path, tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_backend = backends.make_backend
    monkeypatch.setattr(backends, "make_backend", lambda *a, **k: _BreaksAfterInference(make_backend(*a, **k)))
    out = tmp_path / "out"
    rc, summary = bulk_main(src, out, model_path, "--sessions", "1", "--batch", "4")
    assert rc == 2
    files = entries(summary)
    assert set(files) == {"long.mp4", "short1.mp4", "short2.mp4"}
    failed = {p for p, f in files.items() if f["status"] == "error"}
    assert failed and all("inference failed" in files[p]["error"] for p in failed)
    for rel, f in files.items():
        if rel not in failed:
            assert f["status"] == "ok" and len(read_jsonl(out / f"{rel}.jsonl")) == f["frames"]
        else:
            assert not (out / f"{rel}.jsonl").exists()
    assert not leftovers(out)


def test_usage_mistakes_argparse_catches_exit_1_not_2(tmp_path: Path, model_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "client.bulk", str(tmp_path), "--every", "2", "--fps", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "not allowed with" in done.stderr
