"""``--devices``: every GPU of the machine, one bulk process per GPU.

Each GPU gets a decode-and-infer set of its own in a process of its own: its NVDEC sessions,
its lanes and their streams, the letterbox kernel, the CUDA shared-memory regions Triton
reads (registered with that GPU's id), so no CUDA context is shared and one GPU's failure is
that process's. The processes split the files as shards do (:mod:`client.shards`: the same
work-balanced partition, computed by each from the same directory) and the last to finish
merges ``summary.json`` (:mod:`client.summary`). Under an outer ``--shard I/N`` (a node of an
Indexed Job with M GPUs), GPU j runs shard ``I*M + j`` of ``N*M``: the union over every node
and GPU is still every file once, and ``framestream summary OUT`` merges them all.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

from .bulk_run import install, restore
from .errors import UsageError
from .limits import ascii_digits
from .shards import Shard

log = logging.getLogger(__name__)

__all__ = ["visible_gpus", "parse_devices", "select_devices", "device_shard", "child_argv", "combined_exit", "run_per_device"]


def visible_gpus() -> int:
    """CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applies); 0 when CUDA cannot say."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver: the GPU path is not taken anyway
        return 0


def parse_devices(text: str | None) -> list[int] | None:
    """``--devices``: ``all`` (the default: None) or a comma-separated list of device ids."""
    if text is None or text.strip() == "all":
        return None
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not ascii_digits(part):
            raise UsageError(f"--devices takes 'all' or GPU ids separated by commas (e.g. 0,2), got {text!r}")
        if int(part) in ids:
            raise UsageError(f"--devices {text}: GPU {part} is listed twice")
        ids.append(int(part))
    return ids


def select_devices(text: str | None, visible: int) -> list[int]:
    """The GPUs ``--devices`` names among the ``visible`` ones (all of them by default)."""
    ids = parse_devices(text)
    if ids is None:
        return list(range(max(visible, 1)))
    missing = [i for i in ids if i >= visible]
    if missing:
        raise UsageError(f"--devices {text}: this machine shows {visible} GPU(s) (ids 0-{visible - 1}), "
                         f"not {', '.join(map(str, missing))}")
    return ids


def device_shard(outer: Shard | None, position: int, devices: int) -> Shard:
    """The shard the GPU at ``position`` of ``devices`` runs, inside the outer shard if any."""
    if outer is None:
        return Shard(position, devices)
    return Shard(outer.index * devices + position, outer.count * devices)


def child_argv(argv: Sequence[str], device: int, shard: Shard) -> list[str]:
    """The user's command for one GPU: its own device and shard appended (argparse keeps the
    last of a repeated option, so these override what the user gave), no live progress bar."""
    return [*argv, "--devices", str(device), "--shard", f"{shard.index}/{shard.count}", "--no-progress"]


def combined_exit(codes: Sequence[int]) -> int:
    """One exit code for the run: a stop by signal (128 + N, the highest), then a usage error,
    then failed videos, then anything else that is not success."""
    def rank(code: int) -> tuple[int, int]:
        return (0, -code) if code >= 128 else (1, 0) if code == 1 else (2, 0) if code == 2 else (3, -code) if code else (4, 0)

    return min(codes, key=rank, default=0)


def _exit_code(returncode: int) -> int:
    """Popen's -N for a child killed by signal N, as a shell reports it: 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


def run_per_device(argv: Sequence[str], devices: Sequence[int], outer: Shard | None, *,
                   module: str = "client.bulk") -> int:
    """Run ``python -m module argv`` once per device, side by side, and wait for all.

    The children start in sessions of their own, so a terminal's Ctrl-C reaches this process
    only, and it passes SIGINT, SIGTERM or SIGHUP on once: each child then stops as a single run does
    (partial outputs and its summary kept)."""
    children: list[subprocess.Popen] = []
    for position, device in enumerate(devices):
        shard = device_shard(outer, position, len(devices))
        log.info("GPU %d: shard %d/%d", device, shard.index, shard.count)
        children.append(subprocess.Popen([sys.executable, "-m", module, *child_argv(argv, device, shard)],
                                         start_new_session=True))

    def forward(signum: int, frame: object) -> None:  # noqa: ARG001
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = install(forward)  # nohup's SIGHUP stays ignored
    try:
        codes = [_exit_code(child.wait()) for child in children]
    finally:
        restore(previous)
    for device, code in zip(devices, codes):
        if code:
            log.error("GPU %d: exit code %d (its shard summary says which videos)", device, code)
    return combined_exit(codes)
