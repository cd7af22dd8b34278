"""The thread budget: usable CPUs from affinity and cgroup quotas, and how a run splits them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from client.threads import CpuCount, cgroup_cpu_quota, split_budget, usable_cpus
from tests.videos import write_video


def fake_cgroup(tmp_path: Path, *, membership: str, mount: str, files: dict[str, str]) -> dict[str, Path]:
    """A /proc/self/cgroup, a /proc/self/mountinfo and a /sys/fs/cgroup tree under ``tmp_path``
    (``mount``'s ``{root}`` is that tree); ``files`` are written below the tree."""
    root = tmp_path / "sys" / "fs" / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cgroup").write_text(membership)
    (tmp_path / "mountinfo").write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n" + mount.format(root=root) + "\n")
    return {"proc_cgroup": tmp_path / "cgroup", "mountinfo": tmp_path / "mountinfo"}


V2_MOUNT = "31 22 0:27 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"


def test_cgroup_v2_quota_is_the_tightest_on_the_way_up_the_hierarchy(tmp_path: Path) -> None:
    paths = fake_cgroup(tmp_path, membership="0::/jobs/run\n", mount=V2_MOUNT,
                        files={"jobs/run/cpu.max": "max 100000\n", "jobs/cpu.max": "250000 100000\n",
                               "cpu.max": "800000 100000\n"})
    assert cgroup_cpu_quota(**paths) == 2.5
    count = usable_cpus(**paths)
    assert count.quota == 2.5 and count.cpus == min(count.affinity, 3)


def test_cgroup_v2_without_a_quota_limits_nothing(tmp_path: Path) -> None:
    paths = fake_cgroup(tmp_path, membership="0::/\n", mount=V2_MOUNT, files={"cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(**paths) is None
    assert usable_cpus(**paths).cpus == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota_in_a_container_namespace_is_read_at_the_mount_point(tmp_path: Path) -> None:
    # Docker on cgroup v1: /proc/self/cgroup names the host's path, the mount shows the container's own.
    paths = fake_cgroup(
        tmp_path, membership="5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        mount="35 31 0:30 /docker/abc {root} rw,nosuid - cgroup cgroup rw,cpu,cpuacct",
        files={"cpu.cfs_quota_us": "50000\n", "cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(**paths) == 0.5
    assert usable_cpus(**paths) == CpuCount(1, len(os.sched_getaffinity(0)), 0.5)


def test_cgroup_v1_without_a_quota_or_unreadable_files_limit_nothing(tmp_path: Path) -> None:
    mount = "35 31 0:30 / {root} rw - cgroup cgroup rw,cpu"
    paths = fake_cgroup(tmp_path / "a", membership="4:cpu:/\n", mount=mount,
                        files={"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(**paths) is None
    paths = fake_cgroup(tmp_path / "b", membership="4:cpu:/\n", mount=mount, files={"cpu.cfs_quota_us": "garbage"})
    assert cgroup_cpu_quota(**paths) is None
    assert cgroup_cpu_quota(proc_cgroup=tmp_path / "missing", mountinfo=tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("cpus", "workers", "sessions", "cpu_inference", "expected"),
    [
        (1, 1, None, True, (1, 1, 1, 1)),  # (sessions, FFmpeg threads per decoder, OpenCV threads, decoders)
        (4, 1, None, True, (4, 4, 1, 1)),
        (4, 2, 3, True, (3, 2, 1, 2)),
        (8, 4, None, False, (0, 2, 2, 4)),
        (2, 4, None, False, (0, 1, 1, 4)),
    ],
)
def test_the_budget_gives_onnxruntime_a_session_per_cpu_and_each_decoder_its_share(
        cpus, workers, sessions, cpu_inference, expected) -> None:
    b = split_budget(CpuCount(cpus, cpus, None), workers=workers, sessions=sessions, cpu_inference=cpu_inference)
    assert (b.sessions, b.decode_threads, b.opencv_threads, b.decoders) == expected


def run_bulk_limited(tmp_path: Path, model_path: Path, preexec) -> tuple[subprocess.CompletedProcess, dict]:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", frames=3)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "client.bulk", str(videos), "--out", str(out), "--model",
                           str(model_path), "--no-progress", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)
    assert done.returncode == 0, done.stderr
    return done, json.loads((out / "summary.json").read_text())


def test_a_run_pinned_to_one_cpu_budgets_one_cpu_and_says_so(tmp_path: Path, model_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this machine gives one CPU already: pinning to one would prove nothing")
    cpu = min(os.sched_getaffinity(0))
    done, summary = run_bulk_limited(tmp_path, model_path, lambda: os.sched_setaffinity(0, {cpu}))
    assert "threads: 1 usable CPU (affinity 1, " in done.stderr
    assert "1 onnxruntime session(s) x 1 thread(s), 1 decoder(s) x 1 FFmpeg thread(s), OpenCV 1 thread(s)" in done.stderr
    assert summary["backend"]["lanes"] == 1


def _cpu_hierarchy() -> tuple[str, Path] | None:
    """The real cgroup hierarchy that holds the cpu controller, as (version, mount point)."""
    from client.threads import PROC_MOUNTINFO, _mounts

    for version, _, point in _mounts(PROC_MOUNTINFO.read_text()):
        if version == "v1" or "cpu" in (point / "cgroup.controllers").read_text().split():
            return version, point
    return None


@pytest.fixture
def real_cgroup_of_one_cpu() -> Path:
    """A real cgroup (v1 or v2) with a quota of one CPU; skips where none can be made."""
    found = _cpu_hierarchy()
    if found is None:
        pytest.skip("no cgroup hierarchy with the cpu controller is mounted")
    version, point = found
    folder = point / f"framestream-test-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir()
        if version == "v2":
            (folder / "cpu.max").write_text("100000 100000")
        else:
            (folder / "cpu.cfs_period_us").write_text("100000")
            (folder / "cpu.cfs_quota_us").write_text("100000")
    except OSError as e:
        if folder.exists():
            folder.rmdir()
        pytest.skip(f"cannot create a cgroup under {point} ({e.strerror}); needs root and a writable cgroupfs")
    yield folder
    folder.rmdir()  # its one process has exited


def test_a_run_in_a_cgroup_with_a_one_cpu_quota_budgets_one_cpu(tmp_path: Path, model_path: Path,
                                                                 real_cgroup_of_one_cpu: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("this machine gives one CPU already: a one-CPU quota would prove nothing")
    procs = real_cgroup_of_one_cpu / "cgroup.procs"
    done, summary = run_bulk_limited(tmp_path, model_path, lambda: procs.write_text(str(os.getpid())))
    affinity = len(os.sched_getaffinity(0))
    assert f"threads: 1 usable CPU (affinity {affinity}, cgroup CPU quota 1)" in done.stderr
    assert summary["backend"]["lanes"] == 1
