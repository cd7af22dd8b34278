"""``--ray``: a real two-node Ray cluster on loopback runs the bulk job as one machine would.

One cluster (``ray.cluster_utils.Cluster``, every node bound to 127.0.0.1) serves the module;
the driver is the real command line in its own process, as a user runs it.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .videos import write_video

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
# A node that dies is noticed within about a second (Ray's default is tens of seconds).
FAST_HEALTH = {"health_check_period_ms": 200, "health_check_failure_threshold": 5, "health_check_initial_delay_ms": 0}
LOCAL = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="module")
def cluster():
    cluster_utils = pytest.importorskip("ray.cluster_utils",
                                        reason="Ray is not installed (pip install 'framestream[ray]')")
    c = cluster_utils.Cluster(initialize_head=True,
                              head_node_args={**LOCAL, "include_dashboard": False, "_system_config": FAST_HEALTH})
    c.add_node(**LOCAL)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One long video (cut into key-frame segments on two nodes) among short ones, and a non-video."""
    src = tmp_path_factory.mktemp("ray") / "videos"
    (src / "cam").mkdir(parents=True)
    write_video(src / "long.mp4", frames=160)
    for i in range(16):  # units enough that a node still gets one after its first is done
        write_video(src / "cam" / f"short{i}.mp4", frames=8 + i)
    (src / "notes.txt").write_text("not a video\n")
    return src


def bulk(src: Path, out: Path, model: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model),
           "--no-progress", "--sessions", "1", *extra]
    kwargs = dict(cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return subprocess.Popen(cmd, **kwargs)
    return subprocess.run(cmd, timeout=300, **kwargs)


def on_ray(cluster, src: Path, out: Path, model: Path, *extra: str, wait: bool = True):
    return bulk(src, out, model, "--ray", cluster.address, "-v", *extra, wait=wait)


@pytest.fixture(scope="module")
def baseline(videos: Path, model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process run of the same files."""
    out = tmp_path_factory.mktemp("single") / "out"
    done = bulk(videos, out, model_path)
    assert done.returncode == 0, done.stderr
    return out


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def outputs(out: Path) -> dict[str, list[dict]]:
    return {p.relative_to(out).as_posix(): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(out.rglob("*.jsonl"))}


def assert_same_detections(got: Path, expected: Path) -> None:
    """Every video, every frame once and in order, boxes within 0.5 px of the single-process run."""
    mine, theirs = outputs(got), outputs(expected)
    assert sorted(mine) == sorted(theirs)
    for name, frames in theirs.items():
        assert [(f["frame"], f["t"]) for f in mine[name]] == [(f["frame"], f["t"]) for f in frames], name
        for a, b in zip(mine[name], frames):
            assert len(a["detections"]) == len(b["detections"]), (name, a["frame"])
            for da, db in zip(a["detections"], b["detections"]):
                assert max(abs(x - y) for x, y in zip(da[:4], db[:4])) <= 0.5, (name, a["frame"])
                assert abs(da[4] - db[4]) <= 1e-3 and da[5] == db[5], (name, a["frame"])


def wait_for_line(proc: subprocess.Popen, needle: str) -> list[str]:
    """The driver's stderr up to the first line holding ``needle`` (the driver's own event)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"the driver ended before {needle!r}:\n{''.join(seen)}")


def listening(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                addr = cols[1].split(":")[0]
                found.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6,
                                           b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, width, 8))))
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_every_node_of_the_test_cluster_listens_on_loopback_only(cluster) -> None:
    addresses = [ipaddress.ip_address(a) for a in listening(descendants(os.getpid()))]
    loopback = [a.is_loopback or (a.version == 6 and a.ipv4_mapped is not None and a.ipv4_mapped.is_loopback)
                for a in addresses]
    assert addresses and all(loopback), addresses


def test_a_ray_run_writes_the_single_process_outputs_with_the_long_file_split_over_both_nodes(
        cluster, videos: Path, baseline: Path, model_path: Path, tmp_path: Path) -> None:
    done = on_ray(cluster, videos, tmp_path / "out", model_path)
    assert done.returncode == 0, done.stderr
    assert_same_detections(tmp_path / "out", baseline)
    s, single = summary(tmp_path / "out"), summary(baseline)
    assert [(f["path"], f["status"], f["frames"]) for f in s["files"]] == \
        [(f["path"], f["status"], f["frames"]) for f in single["files"]]  # the skipped non-video included
    long = next(f for f in s["files"] if f["path"] == "long.mp4")
    assert len(long["segments"]) >= 2 and sum(seg["frames"] for seg in long["segments"]) == long["frames"]
    nodes = s["ray"]["workers"]
    assert len(nodes) == 2 and all(n["units"] >= 1 and n["lost"] is None for n in nodes)  # both nodes worked
    assert sum(n["frames"] for n in nodes) == s["totals"]["frames"] == single["totals"]["frames"]
    assert s["ray"]["units_rerun"] == 0 and s["schedule"]["segments"] == sum(n["units"] for n in nodes)
    assert s["model"]["digest"] == single["model"]["digest"]
    again = on_ray(cluster, videos, tmp_path / "out", model_path)  # the same resume ledger as one machine
    assert again.returncode == 0 and summary(tmp_path / "out")["totals"]["resumed"] == s["totals"]["ok"]


def test_a_node_lost_mid_run_has_its_units_rerun_elsewhere_and_every_frame_written_once(
        cluster, videos: Path, baseline: Path, model_path: Path, tmp_path: Path) -> None:
    victim = cluster.add_node(**LOCAL)
    cluster.wait_for_nodes()
    driver = on_ray(cluster, videos, tmp_path / "out", model_path, wait=False)
    seen = wait_for_line(driver, f"done on node {victim.node_id}")  # it has worked
    seen += wait_for_line(driver, f"-> node {victim.node_id}")  # and a unit was just handed to it
    cluster.remove_node(victim, allow_graceful=False)  # as a crash, that unit in flight: its processes killed
    _, rest = driver.communicate(timeout=300)
    assert driver.returncode == 0, "".join(seen) + rest
    s = summary(tmp_path / "out")
    lost = [n for n in s["ray"]["workers"] if n["node_id"] == victim.node_id]
    assert lost and lost[0]["lost"] is not None, s["ray"]
    assert s["ray"]["units_rerun"] >= 1 and s["totals"]["ok"] == summary(baseline)["totals"]["ok"]
    assert_same_detections(tmp_path / "out", baseline)  # each frame exactly once, in order


def test_an_interrupted_driver_keeps_what_is_complete_and_a_rerun_finishes_exactly_the_rest(
        cluster, videos: Path, baseline: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    driver = on_ray(cluster, videos, out, model_path, wait=False)
    wait_for_line(driver, "done on node")
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 143, err
    first = summary(out)
    assert first["stopped"] and "SIGTERM" in first["stopped"]
    unfinished = [f["path"] for f in first["files"] if f["status"] not in ("ok", "skipped")]
    assert unfinished, "the interrupt came after the run had finished"
    done = on_ray(cluster, videos, out, model_path)
    assert done.returncode == 0, done.stderr
    second = summary(out)
    assert second["totals"]["resumed"] == first["totals"]["ok"]
    assert sorted(f["path"] for f in second["files"] if f["status"] == "ok" and not f["resumed"]) == sorted(unfinished)
    assert not list(out.rglob("*.jsonl.partial"))
    assert_same_detections(out, baseline)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HIDE_RAY = "import sys; sys.modules['ray'] = None; from client.bulk import main; sys.exit(main(sys.argv[1:], signals=True))"
# Cases that reach past the check for Ray itself (an address tried, a join) need it installed; the
# lowest-versions run has no ray extra, so there they skip (Ray missing is the first thing said).
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra")


@pytest.mark.parametrize("args, without_ray, says", [
    pytest.param(["--ray", f"127.0.0.1:{free_port()}"], False, "nothing answers there", marks=needs_ray),
    (["--ray", "nohost"], False, "HOST:PORT"),
    (["--ray", "auto"], True, "pip install 'framestream[ray]'"),
    (["--ray", "auto", "--shard", "0/2"], False, "give one"),
    (["--ray", "auto", "--devices", "0,1"], False, "--devices is for one machine"),
])
def test_an_unreachable_address_a_malformed_one_or_no_ray_is_one_line_and_exit_1(
        tmp_path: Path, model_path: Path, args: list[str], without_ray: bool, says: str) -> None:
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", frames=2)  # a folder without videos is its own error
    prefix = [sys.executable, "-c", HIDE_RAY] if without_ray else [sys.executable, "-m", "client.bulk"]
    done = subprocess.run([*prefix, str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--model",
                           str(model_path), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("resources, device, expected", [
    ({"CPU": 16.0}, "auto", [{"num_cpus": 1}]),
    ({"CPU": 16.0, "GPU": 2.0}, "auto", [{"num_cpus": 0, "num_gpus": 1}] * 2),
    ({"CPU": 16.0, "GPU": 2.0}, "cpu", [{"num_cpus": 1}]),
    ({"CPU": 0.0}, "auto", []),  # a head kept free of work (ray start --head --num-cpus 0)
])
def test_a_worker_goes_to_each_node_with_a_cpu_or_to_each_of_its_gpus(resources, device, expected) -> None:
    from client.ray_cluster import _placements

    assert _placements([{"NodeID": "n1", "Resources": resources}], device) == [("n1", r) for r in expected]
