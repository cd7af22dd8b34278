"""What a bulk run was asked to do, checked once: :class:`BulkOptions`.

The command line (:mod:`client.bulk`) parses its arguments and builds one of these; from there
on the run, the backend set-up (:mod:`client.backends`) and every Ray node (it is pickled to
them) read this frozen type, never the parser's raw namespace. Every check that needs no model,
GPU or server is made here, so a mistake is one line (exit 1, :class:`~client.errors.UsageError`)
before anything is written; a program may build one itself, checked the same way. The numbers'
bounds and their reasons are :mod:`client.limits`'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from . import defaults, limits
from .contract import MODEL_NAME
from .decode import Sampling
from .devices import parse_devices
from .errors import UsageError
from .inputs import Inputs
from .limits import ascii_digits, check_int, check_port, check_real
from .shards import Shard

__all__ = ["BulkOptions", "RAY_AND_SHARD"]

RAY_AND_SHARD = "--ray and --shard are two ways to spread one run over machines: give one"


@dataclass(frozen=True)
class BulkOptions:
    """A bulk run's options, validated. ``None`` means "not given": the default is chosen where
    the facts it depends on are known (the worker count once the GPU path is decided,
    :func:`client.backends.worker_count`)."""

    inputs: Inputs
    out: Path
    shard: Shard | None = None  # this run's part (--shard, or Kubernetes / Slurm); None with --ray
    from_list: str | None = None  # as given: named in the "no videos" message
    model: Path | None = None
    batch: int = defaults.BATCH
    every: int = 1  # --every, --fps, --keyframes: read as :attr:`sampling`
    fps: float | None = None
    keyframes: bool = False
    classes: str | None = None
    track: str | None = None
    conf: float | None = None
    format: str = "jsonl"
    workers: int | None = None
    split: bool = True  # not --no-split
    sessions: int | None = None
    server: str | None = None  # HOST:PORT of Triton's gRPC endpoint
    model_name: str = MODEL_NAME
    inflight: int | None = None
    shm: str = "auto"
    retry_seconds: float = defaults.RETRY_S
    metrics_url: str | None = None
    devices: str | None = None  # --devices as given (its form checked; which GPUs exist: on the GPU path)
    device: str = "auto"
    square: bool = False
    overwrite: bool = False
    follow_links: bool = False
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    ray: str | None = None  # the Ray head's address, or auto
    progress: bool | None = None  # False: plain log lines; None: a live bar when stderr is a terminal
    verify: bool = False  # a rerun hashes every complete output against its record (else by identity)
    sampling: Sampling = field(init=False)  # which frames are inferred, built once from every/fps/keyframes

    def __post_init__(self) -> None:
        """Every check that needs no file, model, GPU or server: a mistake is one line (exit 1)."""
        _check_numbers(self)
        try:
            sampling = Sampling(every=self.every, fps=self.fps, keyframes=self.keyframes)
        except ValueError as e:  # two of them at once (the command line's parser refuses that first)
            raise UsageError(f"--every, --fps, --keyframes: {e}") from e
        object.__setattr__(self, "sampling", sampling)
        if self.server is not None:
            _check_server(self.server)
        parse_devices(self.devices)  # its form on any path; which GPUs exist is checked on the GPU path
        if self.ray is not None and self.shard is not None:
            raise UsageError(RAY_AND_SHARD)
        if self.ray is not None and self.devices is not None:
            raise UsageError("--devices is for one machine: with --ray every GPU of every node gets its own worker")

    @property
    def embedded(self) -> bool:
        """Inference in this process (onnxruntime), not on a Triton server."""
        return self.server is None


def _check_numbers(o: BulkOptions) -> None:
    """Each number option finite and within its bounds (documented in --help)."""
    check_int("--batch", o.batch, 1, limits.MAX_BATCH, why="a batch's frames are held in memory at once")
    check_int("--every", o.every, 1)
    check_real("--fps", o.fps, low=0.0, low_open=True)
    if o.conf is not None and not (math.isfinite(o.conf) and 0 <= o.conf < 1):
        raise UsageError(f"--conf must be in [0, 1), got {o.conf:g}")
    check_int("--workers", o.workers, 1, limits.MAX_WORKERS, why="decoders at once, each a thread of its own")
    if o.sessions is not None:
        from .threads import usable_cpus

        cpus = usable_cpus()
        check_int("--sessions", o.sessions, 1, max(cpus.cpus, 1),
                  why=f"each holds a copy of the model and runs one thread; here: {cpus.describe()}")
    check_int("--inflight", o.inflight, 1, limits.MAX_INFLIGHT, why="each request has its own connection and buffer")
    check_real("--retry-seconds", o.retry_seconds, low=0.0, high=limits.MAX_RETRY_S)
    check_port("--metrics-port", o.metrics_port)


def _check_server(server: str) -> None:
    """--server HOST:PORT, with PORT a TCP port (an IPv6 host in brackets: [::1]:8001)."""
    host, sep, port = server.rpartition(":")
    if not sep or not host or not ascii_digits(port):
        raise UsageError(f"--server takes HOST:PORT, got {server!r}")
    check_port("--server's PORT", int(port))
