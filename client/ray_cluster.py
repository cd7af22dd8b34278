"""``--ray ADDRESS|auto``: connect to a Ray cluster and start a worker actor per node (or per GPU).

Everything that can be refused is refused here, before any file is touched, in one line
(exit 1): Ray not installed, no cluster recorded on this machine (``auto``), no Ray head
answering at the address, a node whose backend cannot start (no model at the path, its Triton
not ready), nodes that disagree on the model.

Every wait here is bounded and leaves the main thread to the run's signal handlers: Ray's own
blocking calls retry an absent head for minutes in native code that Ctrl-C cannot reach
(ray.init), or turn a handler's exception into a bare KeyboardInterrupt that no longer says
which signal came (ray.get), so they run in a helper thread that this one waits for
(:func:`_off_main`). ray.init off the main thread also leaves the run's SIGTERM handler in
place (from the main thread Ray replaces it by one that exits with status 15).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from . import defaults
from .bulk_run import Interrupts
from .contract import ModelInfo
from .errors import UsageError
from .limits import ascii_digits
from .options import BulkOptions
from .ray_worker import NodeInfo, NodeWorker

log = logging.getLogger(__name__)

__all__ = ["ClusterNode", "RayCluster", "connect"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
START_HEAD = "start one with 'ray start --head' and give its address, or auto on one of its nodes"
T = TypeVar("T")


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
        self.abandoned = False  # a second signal: close without waiting for the nodes

    def busy_seconds(self) -> float:
        return sum(n.busy_s for n in self.nodes)

    def close(self) -> None:
        """Each live worker closes its backend, all at once and for a bounded time (none after a
        second signal); the workers end with the driver's connection in any case."""
        import ray

        refs = [node.actor.close.remote() for node in self.nodes if node.alive]
        if refs and not self.abandoned:
            ray.wait(refs, num_returns=len(refs), timeout=defaults.RAY_STOP_WAIT_S)
        _shutdown(ray)


def _shutdown(ray) -> None:
    """ray.shutdown, then the process's own signal handlers put back: where Ray's failure-signal
    handler is on (RAY_DISABLE_FAILURE_SIGNAL_HANDLER=0), its removal at shutdown resets SIGTERM
    to the default action behind Python's back, so a SIGTERM while the summary is written would
    kill the run."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in Interrupts.SIGNALS} if main else {}
    ray.shutdown()
    for s, handler in handlers.items():
        if handler is not None:
            signal.signal(s, handler)


def connect(options: BulkOptions, model_path: Path | None) -> RayCluster:
    """Join the cluster at ``options.ray`` and start a worker on every node with a CPU."""
    flag = options.ray
    address, where = _resolve(flag)
    host = _host_port(address)[0] if address is not None else None
    if host in LOOPBACK:
        # Ray replaces a loopback address by this machine's routable one, where a cluster bound
        # to 127.0.0.1 does not answer; this (Ray's own switch, read at import) keeps it.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # The run handles SIGTERM itself; Ray's failure-signal handler in this driver would print a
    # native stack dump for every SIGTERM (docker stop) as if the driver had crashed.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError as e:
        raise UsageError("--ray needs Ray, which is not installed: pip install 'framestream[ray]'") from e
    if address is None:
        raise UsageError(f"--ray auto: no Ray cluster was started on this machine (RAY_ADDRESS is not set and "
                         f"{where} does not exist); {START_HEAD}")
    _check_head(flag, address, where)
    _join(ray, flag, address)
    try:
        return RayCluster(address, _start_workers(ray, options, model_path))
    except BaseException:
        _shutdown(ray)
        raise


def _resolve(flag: str) -> tuple[str | None, str]:
    """The address to join and where it came from. ``auto`` is what ray.init's own auto reads:
    RAY_ADDRESS, else the address that ``ray start`` recorded on this machine (None: neither;
    ``where`` is then the file looked for)."""
    if flag != "auto":
        return flag, "there"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env, f"at {env} (RAY_ADDRESS)"
    recorded = _address_file()
    try:
        text = recorded.read_text().strip()
    except OSError:
        return None, str(recorded)
    if not text:
        return None, str(recorded)
    return text, f"at {text}, the head that the last 'ray start' here recorded in {recorded}"


def _address_file() -> Path:
    """Where ``ray start`` records its cluster's address: Ray's temporary folder (RAY_TMPDIR,
    else TMPDIR on Linux, else /tmp)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(base or ("/tmp" if os.name == "posix" else tempfile.gettempdir())) / "ray" / "ray_current_cluster"


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not ascii_digits(port):
        raise UsageError(f"--ray takes HOST:PORT (or ray://HOST:PORT, or auto), got {address!r}")
    return host.strip("[]"), int(port)


def _check_head(flag: str, address: str, where: str) -> None:
    """Refuse at once an address where no Ray head answers (Ray itself retries one for minutes):
    a head's GCS, as every gRPC server, greets each connection with an HTTP/2 SETTINGS frame
    (a 9-byte header of type 4), unasked. Over TLS (RAY_USE_TLS) the server speaks second, so
    there only the connection is checked."""
    host, port = _host_port(address)
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
    try:
        with socket.create_connection((host, port), timeout=defaults.RAY_CONNECT_TIMEOUT_S) as s:
            if tls:
                return
            greeting = _read_exactly(s, 9)
    except OSError as e:
        why = (f"no answer within {defaults.RAY_CONNECT_TIMEOUT_S:.0f} s" if isinstance(e, TimeoutError)
               else e.strerror or str(e) or type(e).__name__)
        raise UsageError(f"--ray {flag}: nothing answers {where} ({why}); {START_HEAD}") from e
    if len(greeting) < 9 or greeting[3] != 4:
        raise UsageError(f"--ray {flag}: something listens {where}, but it is not a Ray cluster's head (no gRPC "
                         f"greeting); give the head's address (ray start --head prints it)")


def _read_exactly(s: socket.socket, n: int) -> bytes:
    """``n`` bytes, or fewer if the peer closes first."""
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _join(ray, flag: str, address: str) -> None:
    """ray.init, bounded (see the module's docstring for why off the main thread)."""
    quiet = _NotOnMainThread()
    ray_log = logging.getLogger("ray._private.worker")
    ray_log.addFilter(quiet)
    try:
        try:
            _off_main(lambda: ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING),
                      defaults.RAY_JOIN_TIMEOUT_S)
        except (TimeoutError, KeyboardInterrupt):
            # given up on while ray.init may still hold Ray's connect lock: Ray's exit hook
            # (ray.shutdown) would wait for that lock, through all of Ray's retries
            atexit.unregister(ray.shutdown)
            raise
    except TimeoutError as e:
        raise UsageError(f"--ray {flag}: the Ray head at {address} answered but did not let this driver join "
                         f"within {defaults.RAY_JOIN_TIMEOUT_S:.0f} s; check the cluster with 'ray status'") from e
    except (ConnectionError, RuntimeError, ValueError) as e:
        reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"--ray {flag}: cannot join a Ray cluster at {address} ({reason}); {START_HEAD}") from e
    finally:
        ray_log.removeFilter(quiet)


class _NotOnMainThread(logging.Filter):
    """Drops Ray's warning that ray.init, called off the main thread, leaves SIGTERM alone: that is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def _off_main(call: Callable[[], T], timeout_s: float) -> T:
    """``call()`` in a helper thread, waited for here: its result, its exception, or
    TimeoutError after ``timeout_s``. A signal handler's exception reaches this thread intact
    meanwhile (the wait is interruptible); a call given up on ends with the process."""
    done = threading.Event()
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as e:  # handed to the waiting thread
            outcome.append((False, e))
        finally:
            done.set()

    threading.Thread(target=run, name="ray-call", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(defaults.POLL_S):  # short waits: a signal taken by another thread is run here soon
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


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


def _start_workers(ray, options: BulkOptions, model_path: Path | None) -> list[ClusterNode]:
    """Start the workers (see :func:`_placements`); every one must start its backend and serve
    the same model, or the run is refused."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    placements = _placements([n for n in ray.nodes() if n.get("Alive")], options.device)
    if not placements:
        raise UsageError(f"--ray {options.ray}: the cluster has no live node with a CPU or GPU to run on")
    concurrency = (options.workers or defaults.GPU_WORKERS) + 4  # every unit in flight, and info/stop/close
    remote = ray.remote(NodeWorker)
    model = Path(os.path.abspath(model_path)) if model_path is not None else None
    actors = [remote.options(**resources, max_concurrency=concurrency, max_restarts=0,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
              .remote(options, model, node_id) for node_id, resources in placements]
    refs = [a.info.remote() for a in actors]
    try:
        infos: list[NodeInfo] = _off_main(lambda: ray.get(refs), defaults.RAY_START_TIMEOUT_S)
    except (ray.exceptions.RayError, TimeoutError) as e:
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"--ray {options.ray}: a node's worker did not start ({why})") from e
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
