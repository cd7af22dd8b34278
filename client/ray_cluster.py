"""``--ray ADDRESS|auto``: connect to a Ray cluster and start a worker actor per node (or per GPU).

Everything that can be refused is refused here, before any file is touched, in one line
(exit 1): Ray not installed, nothing answering at the address, a node whose backend cannot
start (no model at the path, its Triton not ready), nodes that disagree on the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import defaults
from .contract import ModelInfo
from .errors import UsageError
from .ray_worker import NodeInfo, NodeWorker

log = logging.getLogger(__name__)

__all__ = ["ClusterNode", "RayCluster", "connect"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ClusterNode:
    """One worker (a node's, or one of its GPUs') and what it did; ``lost`` says why it left the run."""

    info: NodeInfo
    actor: object
    slots: int  # units in flight at most: one per decoder, and one waiting
    in_flight: int = 0
    units: int = 0
    frames: int = 0
    busy_s: float = 0.0
    lost: str | None = None

    @property
    def alive(self) -> bool:
        return self.lost is None

    def to_summary(self) -> dict[str, object]:
        i = self.info
        return {"node_id": i.node_id, "host": i.host, "gpu": i.gpu, "device": i.device, "lanes": i.lanes,
                "workers": i.workers,
                "units": self.units, "frames": self.frames, "busy_seconds": round(self.busy_s, 3),
                "lost": self.lost}


class RayCluster:
    """The connected cluster as the bulk command sees a backend: ``model``, ``lanes``, ``close``."""

    def __init__(self, address: str, nodes: list[ClusterNode]) -> None:
        self.address, self.nodes = address, nodes
        self.model: ModelInfo = nodes[0].info.model
        self.lanes = sum(n.info.lanes for n in nodes)
        self.gpu = any(n.info.device == "gpu" for n in nodes)

    def busy_seconds(self) -> float:
        return sum(n.busy_s for n in self.nodes)

    def close(self) -> None:
        import ray

        for node in self.nodes:
            if node.alive:
                try:
                    ray.get(node.actor.close.remote(), timeout=defaults.RAY_START_TIMEOUT_S)
                except (ray.exceptions.RayError, TimeoutError):
                    pass
        ray.shutdown()


def connect(args: argparse.Namespace, model_path: Path | None) -> RayCluster:
    """Join the cluster at ``args.ray`` and start a worker on every node with a CPU."""
    address = args.ray
    _check_reachable(address)
    host = _host_port(address)[0] if address != "auto" else None
    if host in LOOPBACK:
        # Ray replaces a loopback address by this machine's routable one, where a cluster bound
        # to 127.0.0.1 does not answer; this (Ray's own switch, read at import) keeps it.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as e:
        raise UsageError("--ray needs Ray: pip install 'framestream[ray]'") from e
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"--ray {address}: cannot join a Ray cluster there ({reason}); start one with "
                         "'ray start --head' and give its address, or auto on one of its nodes") from e
    try:
        return RayCluster(address, _start_workers(ray, args, model_path))
    except BaseException:
        ray.shutdown()
        raise


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"--ray takes HOST:PORT (or ray://HOST:PORT, or auto), got {address!r}")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing listens (Ray would retry it for minutes)."""
    if address == "auto":
        return
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=defaults.RAY_CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UsageError(f"--ray {address}: nothing answers there ({why}); start the cluster's head with "
                         "'ray start --head' and give its address, or auto on one of its nodes") from e


def _placements(nodes: list[dict], device: str) -> list[tuple[str, dict[str, float]]]:
    """(node id, resources) per worker: one per GPU of a node that has GPUs (unless --device cpu),
    else one per node that has a CPU (a head started with --num-cpus 0 is left out)."""
    placements = []
    for n in nodes:
        resources = n.get("Resources", {})
        gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
        if gpus:
            placements += [(n["NodeID"], {"num_cpus": 0, "num_gpus": 1})] * gpus  # Ray gives each its own GPU
        elif resources.get("CPU", 0) >= 1:
            placements.append((n["NodeID"], {"num_cpus": 1}))
    return placements


def _start_workers(ray, args: argparse.Namespace, model_path: Path | None) -> list[ClusterNode]:
    """Start the workers (see :func:`_placements`); every one must start its backend and serve
    the same model, or the run is refused."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    placements = _placements([n for n in ray.nodes() if n.get("Alive")], args.device)
    if not placements:
        raise UsageError(f"--ray {args.ray}: the cluster has no live node with a CPU or GPU to run on")
    from . import defaults

    concurrency = (args.workers or defaults.GPU_WORKERS) + 4  # every unit in flight, and info/stop/close
    remote = ray.remote(NodeWorker)
    model = Path(os.path.abspath(model_path)) if model_path is not None else None
    actors = [remote.options(**resources, max_concurrency=concurrency, max_restarts=0,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
              .remote(args, model, node_id) for node_id, resources in placements]
    try:
        infos: list[NodeInfo] = ray.get([a.info.remote() for a in actors], timeout=defaults.RAY_START_TIMEOUT_S)
    except ray.exceptions.RayError as e:
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"--ray {args.ray}: a node's worker did not start ({why})") from e
    for info in infos:
        if info.error is not None:
            raise UsageError(f"--ray: node {info.host} ({info.node_id[:12]}): {info.error}")
    digests = {i.model.digest for i in infos}
    if len(digests) > 1:
        raise UsageError(f"--ray: the nodes' models differ ({len(digests)} digests); serve or copy the same "
                         "model to every node")
    result = [ClusterNode(i, a, slots=i.workers + 1) for i, a in zip(infos, actors)]
    for node in result:
        i = node.info
        log.info("ray node %s (%s)%s: %s, %d lane(s), %d decoder(s)", i.node_id[:12], i.host,
                 f" GPU {i.gpu}" if i.gpu is not None else "", i.device, i.lanes, i.workers)
    return result
