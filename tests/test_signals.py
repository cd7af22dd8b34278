"""Signals as real events sent to a real bulk run in its own process: SIGHUP, a signal while the
summary is written, a second signal, a signal while a split video's segments are in flight.
Each asks the fault table's three questions: exit code, what summary.json says, what a rerun redoes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.decode import Sampling
from client.discovery import discover
from client.schedule import plan

from .conftest import Processes
from .signal_runner import MISSING, index_frame
from .test_bulk import bulk_main, entries, read_jsonl
from .test_faults import leftovers, start_slowed_run, wait_for
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]
LONG_FRAMES = 96


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One long video and two short ones: with two decoders the short ones finish first."""
    src = tmp_path_factory.mktemp("signals")
    write_video(src / "long.mp4", frames=LONG_FRAMES, size_wh=(160, 96), gop=24)
    write_video(src / "short1.mp4", frames=6, size_wh=(128, 96))
    write_video(src / "short2.mp4", frames=6, size_wh=(128, 96))
    return src


def delivered(proc: subprocess.Popen, sig: int) -> None:
    """Block until ``sig`` is no longer pending in the process (its handler has been entered:
    Python's C-level handler ran, so the Python one runs at the main thread's next step)."""
    if not Path(f"/proc/{proc.pid}/status").exists():
        pytest.skip("no /proc here to see when a signal has been delivered")
    bit = 1 << (sig - 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pending = 0
        for status in Path(f"/proc/{proc.pid}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:  # the thread ended meanwhile
                continue
            for line in lines:
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    pending |= int(line.split()[1], 16)
        if not pending & bit or proc.poll() is not None:
            return
        time.sleep(0.005)
    pytest.fail(f"signal {sig} still pending after 60 s")


def start_held_at_summary(src: Path, out: Path, model: Path, ready: Path, go: Path) -> subprocess.Popen:
    """The bulk CLI in a subprocess that stops just before writing summary.json until ``go``
    exists (tests/signal_runner.py); its backend also slows once a video is complete
    (tests/fault_runner.py's event, at ``ready.slow``), so a first signal can come mid-run."""
    cmd = [sys.executable, "-c", _HELD_AT_SUMMARY, str(ready), str(go), "--", str(src), "--out", str(out),
           "--model", str(model), "--no-progress", "--workers", "2", "--no-split"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


_HELD_AT_SUMMARY = """
import sys
import time
from pathlib import Path
from client import backends
from tests import fault_runner, signal_runner
ready, go, rest = sys.argv[1], sys.argv[2], sys.argv[4:]
out = Path(rest[rest.index("--out") + 1])
make_backend = backends.make_backend
backends.make_backend = lambda *a, **k: fault_runner.SlowAfterFirstComplete(
    make_backend(*a, **k), out, Path(ready + ".slow"), 0.1)
sys.exit(signal_runner.main(["summary", ready, go, "--", *rest]))
"""


def test_sighup_mid_run_stops_like_sigterm_keeps_partials_writes_the_summary_and_exits_129(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    proc = processes.own(start_slowed_run(src, out, model_path, ready))
    wait_for(ready, proc)
    proc.send_signal(signal.SIGHUP)  # the terminal or ssh session that started it closed
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 129, stderr[-2000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    files = entries(summary)
    assert set(files) == {"long.mp4", "short1.mp4", "short2.mp4"}
    assert summary["stopped"] == "interrupted (SIGHUP)"
    long = files["long.mp4"]
    assert long["status"] == "error" and long["partial_output"] == "long.mp4.jsonl.partial"
    assert [r["frame"] for r in read_jsonl(out / long["partial_output"])] == list(range(long["frames"]))
    assert not leftovers(out)
    rc, again = bulk_main(src, out, model_path, "--workers", "2", "--no-split")
    assert rc == 0 and entries(again)["long.mp4"]["frames"] == LONG_FRAMES


def test_under_nohup_a_sighup_is_left_ignored_and_the_run_completes(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    proc = processes.own(start_slowed_run(src, out, model_path, ready,
                                          preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)))
    wait_for(ready, proc)
    proc.send_signal(signal.SIGHUP)  # what `nohup framestream bulk ...` is for
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] is None and {f["status"] for f in entries(summary).values()} == {"ok"}


@pytest.mark.parametrize("mid_run", [False, True], ids=["after-the-run", "second-signal"])
def test_a_sigterm_while_the_summary_is_written_neither_loses_it_nor_gives_a_traceback(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes, mid_run: bool) -> None:
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    proc = processes.own(start_held_at_summary(src, out, model_path, ready, go))
    if mid_run:  # a first SIGTERM while the long video is in flight; the second comes at the summary
        wait_for(Path(f"{ready}.slow"), proc)
        proc.send_signal(signal.SIGTERM)
        delivered(proc, signal.SIGTERM)
    wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    delivered(proc, signal.SIGTERM)
    go.touch()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    files = entries(summary)
    assert set(files) == {"long.mp4", "short1.mp4", "short2.mp4"}
    assert (out / "report.html").exists()
    if mid_run:
        assert summary["stopped"] == "interrupted (SIGTERM)"
        long = files["long.mp4"]
        assert long["status"] == "error"
        assert [r["frame"] for r in read_jsonl(out / long["partial_output"])] == list(range(long["frames"]))
    else:  # the run was over: every video is complete, and summary.json says so
        assert summary["stopped"] is None
        assert all(f["status"] == "ok" for f in files.values())
        assert len(read_jsonl(out / "long.mp4.jsonl")) == LONG_FRAMES
    assert not leftovers(out)


def test_a_second_sigterm_while_a_frame_is_being_written_lets_the_write_finish_and_stops_waiting(
        src: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    cmd = [sys.executable, "-m", "tests.signal_runner", "write", str(ready), f"long.mp4:10:{go}", "--", str(src),
           "--out", str(out), "--model", str(model_path), "--no-progress", "--workers", "2", "--no-split"]
    proc = processes.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_for(ready, proc)  # the writing thread is inside the write of long.mp4's frame 10
    proc.send_signal(signal.SIGTERM)
    wait_for(Path(f"{ready}.stopped"), proc)  # the first one has been handled: the run is stopping
    proc.send_signal(signal.SIGTERM)
    delivered(proc, signal.SIGTERM)
    go.touch()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "interrupted (SIGTERM)"
    long = entries(summary)["long.mp4"]
    frames = [r["frame"] for r in read_jsonl(out / long["partial_output"])]
    assert 10 in frames, "the frame whose write the second signal came during is lost"
    assert frames == list(range(long["frames"]))
    assert "a second signal" in stderr
    assert not leftovers(out)


SPLIT_FRAMES = 200  # grey levels 40..239: one per frame


def test_a_sigterm_while_a_split_video_is_in_flight_leaves_a_gap_free_prefix_and_a_rerun_completes_it(
        tmp_path: Path, model_path: Path, processes: Processes) -> None:
    src, out, ready, go = tmp_path / "v", tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    src.mkdir()
    write_video(src / "long.mp4", frames=SPLIT_FRAMES, size_wh=(160, 96), gop=10, image=index_frame)
    (p,) = plan(discover(src).videos, Sampling(), workers=2, split=True)
    assert p.split and p.segments[0].start == 0
    second = p.segments[1].start  # two decoders: segments 0 and 1 are decoded at once
    assert second > MISSING
    cmd = [sys.executable, "-m", "tests.signal_runner", "gap", str(ready), f"{second}:{go}", "--", str(src),
           "--out", str(out), "--model", str(model_path), "--no-progress", "--workers", "2", "--batch", "4",
           "--sessions", "1"]
    proc = processes.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_for(ready, proc)  # frames of segment 1 are inferred; segment 0 is held before its last MISSING frames
    proc.send_signal(signal.SIGTERM)
    wait_for(Path(f"{ready}.stopped"), proc)  # the signal has been handled: the run is stopping
    go.touch()  # segment 0's decoder may go on; the run stopped, so it hands on nothing more
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    long = entries(summary)["long.mp4"]
    assert long["status"] == "error" and long["partial_output"] == "long.mp4.jsonl.partial"
    frames = [r["frame"] for r in read_jsonl(out / long["partial_output"])]
    assert frames == list(range(long["frames"])), "the partial output must be a gap-free prefix"
    assert len(frames) <= second - MISSING < second  # segment 1's results, kept apart, are not in it
    assert not leftovers(out)
    rc, again = bulk_main(src, out, model_path, "--workers", "2")
    assert rc == 0 and entries(again)["long.mp4"]["frames"] == SPLIT_FRAMES
    assert [r["frame"] for r in read_jsonl(out / "long.mp4.jsonl")] == list(range(SPLIT_FRAMES))


# -- Ctrl-C during README's test command --------------------------------------------------------


def session_processes(sid: int, mark: str) -> list[str]:
    """Processes of session ``sid``, or whose command line names ``mark`` (a run started in a
    session of its own): "pid command" each, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        session = int(stat.rsplit(")", 1)[1].split()[4])
        if session == sid or mark in cmdline:
            found.append(f"{entry} {cmdline.strip()}")
    return found


def test_ctrl_c_stops_pytest_at_once_while_it_runs_the_cli_in_process_and_leaves_no_process(
        tmp_path: Path, model_path: Path, processes: Processes) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here to list the processes left behind")
    from .interrupted_suite import CHILD_READY, NEXT_RAN, WRITE_READY

    env = {**os.environ, "SUITE_DIR": str(tmp_path), "SUITE_MODEL": str(model_path)}
    suite = processes.start([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             f"--basetemp={tmp_path / 'base'}", "tests/interrupted_suite.py"],
                            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for ready in (WRITE_READY, CHILD_READY):  # the in-process run at its write, the child run at its summary
        deadline = time.monotonic() + 120
        while not (tmp_path / ready).exists():
            if suite.poll() is not None or time.monotonic() > deadline:
                suite.kill()
                pytest.fail(f"no {ready}: {suite.communicate()[0][-3000:]}")
            time.sleep(0.02)
    os.killpg(suite.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the foreground process group
    try:
        output, _ = suite.communicate(timeout=60)  # a bound on a hang, not a measure of speed
    except subprocess.TimeoutExpired:
        suite.kill()
        pytest.fail(f"pytest still running 60 s after Ctrl-C: {suite.communicate()[0][-3000:]}")
    assert suite.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert "KeyboardInterrupt" in output
    assert not (tmp_path / NEXT_RAN).exists(), "the suite went on after Ctrl-C"
    assert session_processes(suite.pid, str(tmp_path)) == []
