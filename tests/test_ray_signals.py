"""``--ray``: signals at every point of a Ray run, and a ``--ray`` with nothing to join.

Real signals go to the real driver (``python -m client.bulk --ray ...`` in its own process)
running on the real two-node cluster of tests/test_ray.py (every node on 127.0.0.1), held at a
known point where the point matters: joining the head, the nodes' workers starting, planning,
units in flight, the summary. Each asks the fault table's questions: exit code, what
summary.json says, what was written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from .conftest import Processes
from .test_ray import HIDE_RAY, ROOT, cluster, free_port, needs_ray  # noqa: F401 (cluster: the module's fixture)
from .test_signals import delivered
from .videos import write_video

pytestmark = pytest.mark.ray

SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame: how a gRPC server greets
ENDS_S = 60  # a run told to stop (or refused) ends long before this; Ray's own retries took 10+ minutes

# The real CLI, held at one point until GO exists (READY says it is there); the hold is the only change.
_DRIVER = r"""
import os
import sys
import time
from pathlib import Path

from client import bulk, ray_cluster, ray_run
from client.ray_worker import NodeWorker

point, ready, go, rest = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
HOLD_S, HOLD_EXPIRED = 300, 124  # as tests/signal_runner.py's holds


def hold():  # past HOLD_S the test that should have let it go is gone: end this process at once
    ready.touch()
    deadline = time.monotonic() + HOLD_S
    while not go.exists():
        if time.monotonic() > deadline:
            print(f"no {go} within {HOLD_S} s; giving up", file=sys.stderr, flush=True)
            os._exit(HOLD_EXPIRED)
        time.sleep(0.01)


def held(call):
    def wrapper(*args, **kwargs):
        hold()
        return call(*args, **kwargs)
    return wrapper


class HeldAtStart(NodeWorker):  # a node's worker still starting (its model loading)
    def info(self):
        hold()
        return super().info()


class HoldsLong(NodeWorker):  # long.mp4's unit stays in flight on its node; a stop leaves a mark
    def run(self, unit):
        if unit.plan.candidate.rel == "long.mp4":
            hold()
        return super().run(unit)

    def stop(self):
        Path(f"{ready}.stopped").touch()
        super().stop()


if point == "workers":
    ray_cluster.NodeWorker = HeldAtStart
elif point == "plan":
    ray_run.triage = held(ray_run.triage)
elif point == "units":
    ray_cluster.NodeWorker = HoldsLong
elif point == "summary":
    bulk._write_summary = held(bulk._write_summary)
sys.exit(bulk.main(rest, signals=True))
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ray-signals")
    write_video(src / "long.mp4", frames=48)
    for i in range(4):
        write_video(src / f"short{i}.mp4", frames=6 + i)
    return src


def command(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [str(src), "--out", str(out), "--model", str(model), "--no-progress", "--sessions", "1",
            "--workers", "2", "--no-split", *extra]


def start(processes: Processes, args: list[str], *, point: str | None = None, ready: Path | None = None,
          go: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The driver, held at ``point`` (None: the plain CLI), owned by the test's ``processes``."""
    prefix = ["-c", _DRIVER, point, str(ready), str(go)] if point else ["-m", "client.bulk"]
    return processes.start([sys.executable, *prefix, *args], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)


def ended(proc: subprocess.Popen, why: str) -> str:
    """The process's stderr once it has ended; fails (and kills it) if it does not end."""
    try:
        return proc.communicate(timeout=ENDS_S)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        err = proc.communicate()[1]
        pytest.fail(f"still running {ENDS_S} s after {why}:\n{err[-2000:]}")


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {path.name} (rc {proc.poll()}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def statuses(s: dict) -> dict[str, str]:
    return {f["path"]: f["status"] for f in s["files"]}


@contextlib.contextmanager
def listener(*, greet: bool) -> Iterator[tuple[str, threading.Event]]:
    """A port on 127.0.0.1 that takes connections and never answers a request: it greets as a
    gRPC server does (``greet``: a head that is there but never lets a driver join), or says
    nothing at all (not a head). The event is set once a client speaks HTTP/2 to it (ray.init)."""
    server = socket.create_server(("127.0.0.1", 0))
    joining, conns = threading.Event(), []

    def talk(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if greet:
                conn.sendall(SETTINGS)
            while data := conn.recv(4096):
                if data.startswith(b"PRI * HTTP/2.0"):
                    joining.set()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    if greet:
        threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", joining  # not greeting: connections wait in the backlog
    finally:
        server.close()
        for conn in conns:
            conn.close()


def no_ray_env(tmp_path: Path, recorded: str | None) -> dict[str, str]:
    """The environment of a machine where ``ray start`` recorded ``recorded`` (None: nothing)."""
    ray_tmp = tmp_path / "raytmp"
    (ray_tmp / "ray").mkdir(parents=True)
    if recorded is not None:
        (ray_tmp / "ray" / "ray_current_cluster").write_text(recorded)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_TMPDIR": str(ray_tmp)}


# -- nothing to join: one line, exit 1, at once ---------------------------------------------------

@pytest.mark.parametrize("case", [
    *(pytest.param(case, marks=needs_ray) for case in (
        "auto, the recorded head stopped", "auto, the recorded address is not a head",
        "an address that is not a head", "auto, no cluster ever started here")),
    "an address, Ray not installed"])
def test_a_ray_with_nothing_to_join_is_one_line_and_exit_1_instead_of_minutes_of_retries(
        tmp_path: Path, model_path: Path, processes: Processes, case: str) -> None:
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", frames=2)  # a folder without videos is its own error
    with listener(greet=False) as (silent, _):
        address, recorded, says = {
            "auto, the recorded head stopped": ("auto", f"127.0.0.1:{free_port()}", "Connection refused"),
            "auto, the recorded address is not a head": ("auto", silent, "no answer within"),
            "an address that is not a head": (silent, None, "no answer within"),
            "auto, no cluster ever started here": ("auto", None, "no Ray cluster was started on this machine"),
            "an address, Ray not installed": (f"127.0.0.1:{free_port()}", None, "pip install 'framestream[ray]'"),
        }[case]
        prefix = ["-c", HIDE_RAY] if "not installed" in case else ["-m", "client.bulk"]
        proc = processes.start([sys.executable, *prefix, *command(tmp_path / "videos", tmp_path / "out", model_path,
                                                                  "--ray", address)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=no_ray_env(tmp_path, recorded))
        err = ended(proc, "it started")
    assert proc.returncode == 1, err
    assert err.strip().count("\n") == 0 and says in err, err
    if address == "auto" and recorded is not None:
        assert "ray_current_cluster" in err  # where the address came from
    assert not (tmp_path / "out").exists()


def test_ray_auto_joins_the_cluster_that_ray_start_recorded_on_this_machine(
        cluster, videos: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out = tmp_path / "out"
    proc = start(processes, command(videos, out, model_path, "--ray", "auto"),
                 env=no_ray_env(tmp_path, cluster.address))
    err = ended(proc, "it started")
    assert proc.returncode == 0, err[-3000:]
    s = summary(out)
    assert s["ray"]["address"] == "auto" and len(s["ray"]["workers"]) == 2
    assert set(statuses(s).values()) == {"ok"} and len(s["files"]) == 5


# -- start-up: nothing written, 128 + N at once --------------------------------------------------

@needs_ray
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_joining_a_head_that_never_lets_the_driver_in_ends_start_up_at_once(
        tmp_path: Path, model_path: Path, processes: Processes, sig: signal.Signals) -> None:
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", frames=2)  # a folder without videos is its own error
    with listener(greet=True) as (address, joining):
        proc = start(processes, command(tmp_path / "videos", tmp_path / "out", model_path, "--ray", address))
        if not joining.wait(ENDS_S):
            proc.kill()
            pytest.fail(f"the driver never joined: {proc.communicate()[1][-2000:]}")
        proc.send_signal(sig)  # ray.init is waiting for the head
        err = ended(proc, f"signal {sig.name}")
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_nodes_workers_start_ends_start_up_with_its_own_exit_code(
        cluster, videos: Path, tmp_path: Path, model_path: Path, processes: Processes,
        sig: signal.Signals) -> None:
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    proc = start(processes, command(videos, out, model_path, "--ray", cluster.address), point="workers",
                 ready=ready, go=go)
    try:
        wait_for(ready, proc)  # a node's worker is starting
        proc.send_signal(sig)
        err = ended(proc, f"signal {sig.name}")
    finally:
        go.touch()
    assert proc.returncode == 128 + sig, err[-2000:]  # not 15 (Ray's own SIGTERM handler), not 130 for every signal
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()


def test_a_signal_after_the_workers_started_and_before_any_unit_is_dispatched_stops_the_run_honestly(
        cluster, videos: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    proc = start(processes, command(videos, out, model_path, "--ray", cluster.address), point="plan",
                 ready=ready, go=go)
    wait_for(ready, proc)  # the run has begun (signals are flags now) and is planning
    proc.send_signal(signal.SIGTERM)
    delivered(proc, signal.SIGTERM)
    go.touch()
    err = ended(proc, "SIGTERM")
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received" not in err, "Ray's native stack dump, as if the driver had crashed"
    s = summary(out)
    assert s["stopped"] == "interrupted (SIGTERM)", "the summary must not say the run is complete"
    assert set(statuses(s).values()) == {"not_processed"} and len(s["files"]) == 5
    assert all(f["error"] == "not started: interrupted (SIGTERM)" for f in s["files"])
    assert sum(n["units"] for n in s["ray"]["workers"]) == 0
    assert not list(out.rglob("*.jsonl"))


# -- dispatching and collecting -----------------------------------------------------------------

def test_a_second_signal_stops_waiting_for_the_units_in_flight_and_keeps_what_is_complete(
        cluster, videos: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    proc = start(processes, command(videos, out, model_path, "--ray", cluster.address), point="units",
                 ready=ready, go=go)
    try:
        wait_for(ready, proc)  # long.mp4's unit is in flight on a node, and stays there
        wait_for(out / "short0.mp4.jsonl", proc)  # while a short one completes
        proc.send_signal(signal.SIGTERM)
        wait_for(Path(f"{ready}.stopped"), proc)  # the first one reached the nodes: the driver waits for long.mp4
        proc.send_signal(signal.SIGTERM)
        err = ended(proc, "a second SIGTERM")
    finally:
        go.touch()
    assert proc.returncode == 143, err[-2000:]
    assert "a second signal" in err and "Traceback" not in err and "SIGTERM received" not in err
    s = summary(out)
    assert s["stopped"] == "interrupted (SIGTERM)"
    files = statuses(s)
    assert files["short0.mp4"] == "ok" and len((out / "short0.mp4.jsonl").read_text().splitlines()) == 6
    assert files["long.mp4"] == "error" and not (out / "long.mp4.jsonl").exists()
    assert all(files[f"short{i}.mp4"] in ("ok", "error", "not_processed") for i in range(4))


def test_a_sigterm_while_a_ray_runs_summary_is_written_keeps_the_summary_and_exits_143(
        cluster, videos: Path, tmp_path: Path, model_path: Path, processes: Processes) -> None:
    out, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    proc = start(processes, command(videos, out, model_path, "--ray", cluster.address), point="summary",
                 ready=ready, go=go)
    wait_for(ready, proc)  # every video is done; summary.json is about to be written
    proc.send_signal(signal.SIGTERM)
    delivered(proc, signal.SIGTERM)
    go.touch()
    err = ended(proc, "SIGTERM")
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    s = summary(out)
    assert s["stopped"] is None and set(statuses(s).values()) == {"ok"} and len(s["files"]) == 5
