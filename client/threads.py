"""One thread budget for the machine: how many CPUs this process may use, and who gets them.

``os.cpu_count()`` counts the host's CPUs: a container limited to 4 CPUs on a 64-core host
would start 64 onnxruntime sessions and FFmpeg would size its thread pools for 64. The
usable count is the smallest of the CPU affinity (``taskset``, a cpuset) and the cgroup's
CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; the tightest
one on the way up the hierarchy, since a parent's quota binds its children). A fractional
quota is rounded up: 1.5 CPUs runs two threads that the kernel throttles, not one that
leaves half a CPU idle.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from . import defaults

__all__ = ["CpuCount", "ThreadBudget", "usable_cpus", "cpu_sessions", "cgroup_cpu_quota", "split_budget", "apply_opencv"]

PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class CpuCount:
    """The CPUs this process may use, and where the number comes from."""

    cpus: int
    affinity: int  # CPUs in the affinity mask
    quota: float | None  # CPUs the cgroup quota allows; None: no quota

    def describe(self) -> str:
        quota = "no cgroup CPU quota" if self.quota is None else f"cgroup CPU quota {self.quota:g}"
        return f"{self.cpus} usable CPU{'s' if self.cpus != 1 else ''} (affinity {self.affinity}, {quota})"


def usable_cpus(*, proc_cgroup: Path = PROC_CGROUP, mountinfo: Path = PROC_MOUNTINFO) -> CpuCount:
    """This process's usable CPUs: affinity and cgroup quota, whichever is tighter (at least 1)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_cpu_quota(proc_cgroup=proc_cgroup, mountinfo=mountinfo)
    cpus = affinity if quota is None else min(affinity, max(1, math.ceil(quota - 1e-9)))
    return CpuCount(max(1, cpus), affinity, quota)


def cpu_sessions() -> int:
    """Embedded CPU sessions by default: one per usable CPU (not the host's count), each with
    :data:`~client.defaults.THREADS_PER_SESSION` threads."""
    return usable_cpus().cpus


def cgroup_cpu_quota(*, proc_cgroup: Path = PROC_CGROUP, mountinfo: Path = PROC_MOUNTINFO) -> float | None:
    """CPUs this process's cgroups allow (quota / period), the tightest of v2 and v1 and of
    every level up to the mount; None when nothing limits it or the files cannot be read."""
    try:
        memberships = _memberships(proc_cgroup.read_text())
        mounts = _mounts(mountinfo.read_text())
    except OSError:
        return None
    limits = []
    for version, mount_root, mount_point in mounts:
        path = memberships.get(version)
        if path is not None:
            limits += [q for q in (_quota(version, d) for d in _levels(path, mount_root, mount_point)) if q is not None]
    return min(limits) if limits else None


def _memberships(text: str) -> dict[str, str]:
    """/proc/self/cgroup: the cgroup path of v2 (``0::/path``) and of v1's cpu controller."""
    found = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            found["v2"] = path
        elif "cpu" in controllers.split(","):
            found["v1"] = path
    return found


def _mounts(text: str) -> list[tuple[str, str, Path]]:
    """/proc/self/mountinfo: (version, root in the hierarchy, mount point) of cgroup2 and of
    the v1 hierarchy that holds the cpu controller."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or sep < 5:
            continue
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        root, point = fields[3], Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2":
            found.append(("v2", root, point))
        elif fstype == "cgroup" and "cpu" in options:
            found.append(("v1", root, point))
    return found


def _levels(path: str, mount_root: str, mount_point: Path) -> list[Path]:
    """The folders of ``path`` and its ancestors below ``mount_point``. A path outside the
    mount's root (a container's own cgroup namespace) is read at the mount point alone."""
    rel = os.path.relpath(path, mount_root) if path.startswith(mount_root) else "."
    if rel.startswith(".."):
        rel = "."
    parts = [] if rel == "." else Path(rel).parts
    return [mount_point.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _quota(version: str, folder: Path) -> float | None:
    try:
        if version == "v2":
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


@dataclass(frozen=True)
class ThreadBudget:
    """How the usable CPUs are split between onnxruntime, FFmpeg and OpenCV."""

    cpus: CpuCount
    sessions: int  # onnxruntime CPU sessions (0: inference is not on this CPU)
    session_threads: int  # intra-op threads per session
    decoders: int  # decode workers
    decode_threads: int  # FFmpeg threads per decoder
    opencv_threads: int  # OpenCV's pool (the CPU letterbox)

    def describe(self) -> str:
        inference = (f"{self.sessions} onnxruntime session(s) x {self.session_threads} thread(s)" if self.sessions
                     else "inference off this CPU")
        return (f"threads: {self.cpus.describe()}: {inference}, {self.decoders} decoder(s) x {self.decode_threads} "
                f"FFmpeg thread(s), OpenCV {self.opencv_threads} thread(s)")


def split_budget(cpus: CpuCount, *, workers: int, sessions: int | None, cpu_inference: bool) -> ThreadBudget:
    """Split ``cpus`` on purpose.

    With onnxruntime on the CPU, inference is almost all the work (720p: ~28 ms of CPU a frame
    against ~1.8 ms to decode and letterbox, results/embedded.md), so it gets a 1-thread
    session per CPU; each decoder gets an even share of the CPUs for FFmpeg's threads (they
    run while the sessions wait for a batch), and OpenCV one thread, as the decoders already
    letterbox in parallel and a pool of its own would only contend with the sessions.
    Without CPU inference (Triton, the GPU), decoding is the CPU's work: each decoder gets
    its share for FFmpeg and OpenCV alike.
    """
    share = max(1, cpus.cpus // max(1, workers))
    if cpu_inference:
        return ThreadBudget(cpus, sessions or cpus.cpus, defaults.THREADS_PER_SESSION, workers, share, 1)
    return ThreadBudget(cpus, 0, 0, workers, share, share)


def apply_opencv(budget: ThreadBudget) -> None:
    """Size OpenCV's pool, when the CPU letterbox uses OpenCV at all."""
    from .decode.pyav_source import opencv

    cv2 = opencv()
    if cv2 is not None:
        cv2.setNumThreads(budget.opencv_threads)
