"""docker/compose.yaml's CPU profile run as a user runs it: images built, containers up.

One scenario, shared by the tests below (module fixture ``stack``): build the images (from
the official bases when the engine has them, else from Debian stand-ins made by
docker/offline-bases.sh; wheels from docker/wheelhouse.sh, installed with --no-index), then
``docker-compose --profile cpu up`` on generated videos three times:

1. stopped with ``docker-compose stop`` (SIGTERM) once one file is complete, Prometheus has
   scraped the client and Triton lists the client's shared-memory regions;
2. ``up`` again: it finishes the files the stop cut short;
3. ``up`` again: every file is skipped as complete.

Outputs are compared with an embedded run (``client.bulk.main`` on this host) with the model
file the containers used, copied out of the volume. Skips where no Docker engine answers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from client import bulk
from server_config.model.paths import REPO_ROOT
from tests.videos import write_video

pytestmark = pytest.mark.docker

DOCKER_DIR = REPO_ROOT / "docker"
SERVICES = ["model-init", "triton-cpu", "bulk-cpu", "prometheus"]
OFFICIAL = {"FRAMESTREAM_PYTHON_BASE": "python:3.11.11-slim-bookworm",
            "FRAMESTREAM_PROMETHEUS_IMAGE": "prom/prometheus:v3.7.3"}
USER = "4321:4321"  # neither root nor the images' 10001: the compose file must not rely on either
VIDEOS = {f"v{i}.mp4": 120 for i in range(4)}  # 480 frames at ~16 frames/s: long enough to stop mid-way
EVENT_TIMEOUT_S = 240.0


def _engine_problem() -> str | None:
    """Why the test cannot run here, or None (quick: the main suite must not wait on this)."""
    for tool, package in (("docker", "docker.io"), ("docker-compose", "docker-compose")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y {package})"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (docker info timed out)"
    if info.returncode != 0 or not info.stdout.strip():
        return f"no Docker engine is running (start dockerd): {info.stderr.strip()[:200]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def _has_image(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def _base_images() -> dict[str, str]:
    """The official bases where the engine has them; else the offline stand-ins (cached in
    the engine); else nothing, and the build pulls the official ones."""
    chosen = {k: os.environ[k] for k in OFFICIAL if os.environ.get(k)}
    if len(chosen) == len(OFFICIAL) or all(_has_image(image) for image in OFFICIAL.values()):
        return chosen
    if shutil.which("debootstrap") and os.geteuid() == 0:
        line = _run(["bash", str(DOCKER_DIR / "offline-bases.sh")]).strip().splitlines()[-1]
        stand_ins = dict(item.split("=", 1) for item in line.removeprefix("export ").split())
        return {**stand_ins, **chosen}
    return chosen


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _wait_for(what: str, condition, *, give_up=lambda: None):
    """Poll ``condition`` until it returns something true; ``give_up`` returns a reason to stop early."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        reason = give_up()
        assert reason is None, f"waiting for {what}: {reason}"
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what} after {EVENT_TIMEOUT_S:.0f} s")


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    data: Path
    out: Path
    http_port: int
    prometheus_port: int
    record: dict = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600) -> str:
        return _run(["docker-compose", "-f", str(DOCKER_DIR / "compose.yaml"), "-p", self.project,
                     "--profile", "cpu", *args], env=self.env, timeout=timeout)

    def up(self) -> None:
        """What a user types, detached so the test can watch: model first, Triton healthy, then the client."""
        self.compose("up", "-d", *SERVICES)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).strip()

    def inspect(self, service: str) -> dict:
        return json.loads(_run(["docker", "inspect", self.container(service)]))[0]

    def bulk_running(self) -> bool:
        return self.inspect("bulk-cpu")["State"]["Running"]

    def wait_bulk(self) -> int:
        return int(_run(["docker", "wait", self.container("bulk-cpu")], timeout=EVENT_TIMEOUT_S).strip())

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())

    def registered_regions(self) -> list[str]:
        status = _get_json(f"http://127.0.0.1:{self.http_port}/v2/systemsharedmemory/status")
        return [region["name"] for region in status]

    def prometheus(self, query: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        return _get_json(url)["data"]["result"]

    def target_up(self, instance: str) -> bool:
        return any(r["value"][1] == "1" for r in self.prometheus(f'up{{instance="{instance}"}}'))


def _finished_outputs(out: Path) -> set[str]:
    return {p.name for p in out.glob("*.jsonl") if not p.name.endswith(".jsonl.partial")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    root = tmp_path_factory.mktemp("compose")
    data, out = root / "data", root / "out"
    data.mkdir()
    out.mkdir()
    for name, frames in VIDEOS.items():
        write_video(data / name, frames=frames, size_wh=(320, 192), fps=24, gop=24)
    uid, gid = USER.split(":")
    if os.geteuid() == 0:
        os.chown(out, int(uid), int(gid))  # OUT belongs to the user the client runs as
    else:
        out.chmod(0o777)
    s = Stack(project=f"fstest{uuid.uuid4().hex[:8]}", env={}, data=data, out=out,
              http_port=_free_port(), prometheus_port=_free_port())
    s.env = {**os.environ, **_base_images(), "FRAMESTREAM_INPUT": str(data), "FRAMESTREAM_OUTPUT": str(out),
             "FRAMESTREAM_UID": uid, "FRAMESTREAM_GID": gid, "FRAMESTREAM_HTTP_PORT": str(s.http_port),
             "FRAMESTREAM_GRPC_PORT": str(_free_port()), "FRAMESTREAM_METRICS_PORT": str(_free_port()),
             "FRAMESTREAM_PROMETHEUS_PORT": str(s.prometheus_port)}
    _run(["bash", str(DOCKER_DIR / "wheelhouse.sh")], env={**os.environ, "PYTHON": sys.executable})
    try:
        s.compose("build", "model-init")  # the one framestream-cpu image of model-init, triton-cpu, bulk-cpu
        _scenario(s, root)
        yield s
    finally:
        if os.environ.get("FRAMESTREAM_KEEP_COMPOSE") is None:
            subprocess.run(["docker-compose", "-f", str(DOCKER_DIR / "compose.yaml"), "-p", s.project,
                            "--profile", "cpu", "down", "-v", "--remove-orphans", "-t", "30"],
                           env=s.env, capture_output=True, timeout=300)


def _scenario(s: Stack, root: Path) -> None:
    r = s.record
    # 1. up, then SIGTERM once a file is complete and Prometheus has seen the client.
    s.up()
    def finished_early() -> str | None:
        return None if s.bulk_running() else "the run finished before it could be stopped"

    r["regions_during_run"] = _wait_for("Triton to list the client's regions", s.registered_regions,
                                        give_up=finished_early)
    _wait_for("a first complete output", lambda: _finished_outputs(s.out), give_up=finished_early)
    _wait_for("Prometheus to scrape the client", lambda: s.target_up("bulk-cpu:9100"), give_up=finished_early)
    s.compose("stop", "-t", "120", "bulk-cpu")
    r["stopped_exit"] = s.inspect("bulk-cpu")["State"]["ExitCode"]
    r["stopped_summary"] = s.summary()
    r["stopped_outputs"] = {name: (s.out / name).read_text() for name in _finished_outputs(s.out)}
    r["regions_after_stop"] = s.registered_regions()
    r["shm_files_after_stop"] = _run(["docker", "exec", s.container("triton-cpu"), "ls", "/dev/shm"]).split()
    r["inspect"] = {name: s.inspect(name) for name in SERVICES}
    r["triton_uid"] = _run(["docker", "exec", s.container("triton-cpu"), "id", "-u"]).strip()
    # The embedded run on this host, with the model the containers used.
    model = root / "model.onnx"
    _run(["docker", "cp", f"{s.container('model-init')}:/models/yolo/1/model.onnx", str(model)])
    r["embedded"] = root / "embedded"
    r["embedded_exit"] = bulk.main([str(s.data), "--out", str(r["embedded"]), "--model", str(model), "--no-progress"])
    # 2. up again: the files cut short are finished.
    s.up()
    r["second_exit"] = s.wait_bulk()
    r["second_summary"] = s.summary()
    # 3. up again: nothing to do.
    s.up()
    r["third_exit"] = s.wait_bulk()
    r["third_summary"] = s.summary()
    r["triton_target_up"] = s.target_up("triton-cpu:8002")
    r["triton_series"] = s.prometheus('nv_inference_count{model="yolo"}')
    r["client_series"] = s.prometheus('max_over_time(framestream_frames_total{instance="bulk-cpu:9100"}[1h])')
    r["client_was_up"] = s.prometheus('max_over_time(up{instance="bulk-cpu:9100"}[1h])')


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_same_detections(a: list[dict], b: list[dict], name: str) -> int:
    assert [(x["frame"], x["t"]) for x in a] == [(x["frame"], x["t"]) for x in b], name
    boxes = 0
    for fa, fb in zip(a, b):
        da, db = np.array(fa["detections"]).reshape(-1, 6), np.array(fb["detections"]).reshape(-1, 6)
        assert len(da) == len(db), f"{name} frame {fa['frame']}"
        np.testing.assert_allclose(da[:, :4], db[:, :4], atol=0.5, err_msg=f"{name} frame {fa['frame']}")
        assert (da[:, 5] == db[:, 5]).all(), f"{name} frame {fa['frame']}"
        boxes += len(da)
    return boxes


def test_the_bulk_container_finishes_with_the_embedded_runs_detections_and_the_server_section(stack) -> None:
    r = stack.record
    assert r["embedded_exit"] == 0 and r["second_exit"] == 0
    assert _finished_outputs(stack.out) == {f"{name}.jsonl" for name in VIDEOS}
    boxes = sum(_assert_same_detections(_read_jsonl(stack.out / f"{name}.jsonl"),
                                        _read_jsonl(r["embedded"] / f"{name}.jsonl"), name) for name in VIDEOS)
    assert boxes > 0
    summary = r["second_summary"]
    assert summary["totals"]["ok"] == len(VIDEOS) and summary["totals"]["frames"] > 0
    assert summary["server"]["inferences"] > 0 and summary["server"]["request_failures"] == 0


def test_batches_travel_through_system_shared_memory_between_the_two_containers(stack) -> None:
    r = stack.record
    assert r["regions_during_run"] and all(name.startswith("framestream_sys_") for name in r["regions_during_run"])
    assert r["second_summary"]["backend"]["transport"] == "system_shm"


def test_prometheus_scraped_triton_and_the_client(stack) -> None:
    r = stack.record
    assert r["triton_target_up"]
    assert [x["value"][1] for x in r["client_was_up"]] == ["1"]
    assert r["triton_series"] and sum(float(x["value"][1]) for x in r["triton_series"]) > 0
    assert r["client_series"] and float(r["client_series"][0]["value"][1]) > 0


def test_framestream_containers_run_as_a_non_root_user_and_read_the_input_read_only(stack) -> None:
    r = stack.record
    for name in ["model-init", "triton-cpu", "bulk-cpu"]:
        user = r["inspect"][name]["Config"]["User"]
        assert user and user.split(":")[0] not in ("root", "0"), f"{name} runs as {user!r}"
    assert r["triton_uid"] == USER.split(":")[0]  # the client's user: it opens the client's 0600 regions
    mounts = {m["Destination"]: m for m in r["inspect"]["bulk-cpu"]["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/out"]["RW"] is True
    assert (stack.out / "summary.json").stat().st_uid == int(USER.split(":")[0])


def test_docker_compose_stop_keeps_only_finished_outputs_and_releases_every_region(stack) -> None:
    r = stack.record
    assert r["stopped_exit"] == 143  # SIGTERM handled (a SIGKILL after the stop timeout would be 137)
    summary = r["stopped_summary"]
    assert summary["stopped"] and "SIGTERM" in summary["stopped"]
    done = {f["path"] for f in summary["files"] if f["status"] == "ok"}
    assert done and done != set(VIDEOS), "the stop should come with some files done and some not"
    assert set(r["stopped_outputs"]) == {f"{name}.jsonl" for name in done}  # nothing unfinished looks complete
    for name, text in r["stopped_outputs"].items():  # and what looks complete is: the same bytes at the end
        assert text == (stack.out / name).read_text()
    assert r["regions_after_stop"] == []
    assert not [n for n in r["shm_files_after_stop"] if n.startswith("framestream_")]
    second = {f["path"]: f for f in r["second_summary"]["files"]}
    assert {p for p, f in second.items() if f["resumed"]} == done
    assert all(f["status"] == "ok" for f in second.values())


def test_a_further_up_skips_every_file_as_complete(stack) -> None:
    r = stack.record
    assert r["third_exit"] == 0
    files = r["third_summary"]["files"]
    assert len(files) == len(VIDEOS) and all(f["status"] == "ok" and f["resumed"] for f in files)
    assert r["third_summary"]["totals"]["resumed"] == len(VIDEOS)
