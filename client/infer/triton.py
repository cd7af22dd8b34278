"""Triton over gRPC: one blocking request per lane, so ``lanes`` is exactly the in-flight bound.

tritonclient's ``async_infer`` puts no limit on outstanding requests; here each of K lane
threads has at most one request out, so at most K are in flight and decoding waits when
all lanes are busy (the pipeline's queues are bounded). On the same host, inputs travel
through a ring of K shared-memory regions (system memory for CPU frames, CUDA memory for
GPU frames), one per lane, registered at start and unregistered on every way out
(``client/infer/shm.py``); the pipeline builds each batch inside its lane's region. Without
shared memory, GPU frames are copied once into pinned host memory and sent in the request.

The served model is the truth: its geometry, class names and digest come from the
``framestream_*`` parameters of its config on the server (written by whatever put the model
into the repository), never from a local file. A model that stops being served mid-run (a
server stopping cleanly unloads it) is retried like a server that is gone, and one that
comes back with other bytes stops the run's inference.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from .. import defaults
from ..arrays import copy_into, on_host
from ..contract import CONFIG_PREFIX, DETECTIONS, INPUT, META, MODEL_NAME, NUM_DETECTIONS, ModelInfo
from ..errors import ContractMismatchError, ModelError, ServerError, ServerUnavailableError, UsageError
from . import BatchOutput
from .buffers import LaneBuffers, device, host, pinned
from .busy import BusyClock
from ..gpu.streams import Lanes
from .shm import CudaShmRing, SystemShmRing, import_cuda_shm

log = logging.getLogger(__name__)

SHM_MODES = ("auto", "system", "cuda", "off")
_RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class TritonOptions:
    url: str  # host:port of the gRPC endpoint
    model_name: str = MODEL_NAME
    inflight: int | None = None  # None: defaults.INFLIGHT_PER_INSTANCE per model instance
    shm: str = "auto"
    retry_seconds: float = defaults.RETRY_S
    request_timeout_s: float = defaults.REQUEST_TIMEOUT_S
    max_batch_bytes: int = 0  # shared-memory region size; 0: batch x imgsz^2 x 3


class _InFlight:
    """Counts requests out at once; ``peak`` is what the tests check against the bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


class TritonBackend:
    def __init__(self, options: TritonOptions, *, batch: int, gpu_frames: bool = False, device_id: int = 0) -> None:
        try:
            import tritonclient.grpc as grpcclient
        except ImportError as e:
            raise UsageError("--server needs tritonclient: pip install 'framestream[client]'") from e
        self._grpc = grpcclient
        self.options = options
        self._client = grpcclient.InferenceServerClient(options.url)
        config = self._check_server()
        instances = sum(g.count for g in config.instance_group) or 1
        self.lanes = options.inflight or defaults.INFLIGHT_PER_INSTANCE * instances
        self.model = served_model_info(config, options.url)
        self.in_flight = _InFlight()
        self._clock = BusyClock()
        self._dead: str | None = None
        self._aborted = threading.Event()  # set by abort(): lanes waiting out an outage give up
        self._clients = [grpcclient.InferenceServerClient(options.url) for _ in range(self.lanes)]
        self._ring = None
        self.device_id = device_id  # GPU frames live there; CUDA regions are registered with its id
        self.shm = self._choose_shm(gpu_frames)  # "system", "cuda" or None
        h, w = self.model.imgsz
        size = options.max_batch_bytes or batch * max(h, w) ** 2 * 3
        self._ring = self._open_ring(size)
        # GPU frames without a CUDA ring: each lane fills its device buffer on a stream of its own.
        self._gpu_lanes = Lanes(self.lanes, device_id) if gpu_frames and self._ring is None else None
        # Without a ring: batches in host memory, or on the GPU with a pinned staging copy.
        self._buffers = LaneBuffers(self.lanes, device if gpu_frames else host)  # allocated in the lane's thread
        self._staging = LaneBuffers(self.lanes, pinned if gpu_frames else host)

    # -- start-up -------------------------------------------------------------------------
    def _check_server(self):
        from tritonclient.utils import InferenceServerException

        name, url = self.options.model_name, self.options.url
        try:
            if not (self._client.is_server_live() and self._client.is_server_ready()):
                raise ServerUnavailableError(f"Triton at {url} is not live and ready")
            if not self._client.is_model_ready(name):
                models = [m.name for m in self._client.get_model_repository_index().models]
                raise ServerError(f"model {name!r} is not ready on Triton at {url}; it serves {models}")
            metadata = self._client.get_model_metadata(name)
            config = self._client.get_model_config(name).config
        except InferenceServerException as e:
            raise ServerUnavailableError(f"cannot reach Triton at {url}: {e.message()} (is the server running?)") from e
        check_contract(name, metadata, config)
        return config

    def _choose_shm(self, gpu_frames: bool) -> str | None:
        """system or cuda shared memory when the server shares this host (and offers it), else None."""
        mode = self.options.shm
        if mode not in SHM_MODES:
            raise UsageError(f"--shm must be one of {', '.join(SHM_MODES)}, got {mode!r}")
        host = self.options.url.rsplit(":", 1)[0]
        if mode == "off" or (mode == "auto" and host not in _LOOPBACK):
            return None
        if mode == "auto":
            mode = "cuda" if gpu_frames else "system"
        if mode == "cuda":
            _require_cuda_shm()
        extensions = self._client.get_server_metadata().extensions
        if f"{mode}_shared_memory" not in extensions:
            if self.options.shm == mode:
                raise ServerError(f"Triton at {self.options.url} does not offer {mode} shared memory")
            return None
        return mode

    def _open_ring(self, size: int):
        """The lanes' shared-memory regions, registered; a server that cannot open them (run
        as another user, in another IPC namespace) is one line saying what to do."""
        from tritonclient.utils import InferenceServerException

        ring = {"system": SystemShmRing, "cuda": CudaShmRing}.get(self.shm)
        if ring is None:
            return None
        try:
            if ring is CudaShmRing:
                return ring(self._client, self.lanes, size, self.device_id)
            return ring(self._client, self.lanes, size)
        except InferenceServerException as e:
            if self.shm == "cuda":
                raise ServerError(cuda_shm_refusal(self.options.url, e.message())) from e
            raise ServerError(
                f"Triton at {self.options.url} cannot use our {self.shm} shared memory ({e.message()}); run the "
                "server as the same user in the same IPC namespace (compose does), or pass --shm off") from e

    # -- inference ------------------------------------------------------------------------
    def batch_buffer(self, lane: int, shape: tuple[int, int, int, int]):
        """The lane's shared-memory region when there is a ring, else the lane's own buffer."""
        if self._ring is not None:
            return self._ring.view(lane, shape)
        if self._gpu_lanes is not None:
            self._gpu_lanes.enter(lane)  # the buffer, the kernels and the download on the lane's stream and GPU
        return self._buffers.view(lane, shape)

    def infer(self, lane: int, batch: np.ndarray) -> BatchOutput:
        from tritonclient.utils import InferenceServerException

        if self._dead:
            raise ServerUnavailableError(self._dead)  # one verdict for every lane
        deadline = time.monotonic() + self.options.retry_seconds
        delay = defaults.RETRY_FIRST_DELAY_S
        while True:
            try:
                with self.in_flight, self._clock.measure(len(batch)):
                    return self._infer_once(lane, batch)
            except InferenceServerException as e:
                if not self._is_outage(e):
                    raise ServerError(f"Triton rejected a batch: {e.message()}") from e
                if time.monotonic() + delay > deadline:
                    self._dead = (f"Triton at {self.options.url} unreachable or model {self.options.model_name!r} "
                                  f"unavailable for {self.options.retry_seconds:g} s ({e.message()})")
                    raise ServerUnavailableError(self._dead) from e
                if self._aborted.wait(delay):
                    raise ServerUnavailableError(f"stopped while waiting for Triton at {self.options.url} "
                                                 f"({e.message()})") from e
                delay = min(delay * 2, defaults.RETRY_MAX_DELAY_S)
                self._after_outage()

    def _is_outage(self, e) -> bool:
        """Server gone, request timed out, regions lost in a restart, or the model not (or no
        longer) being served: all retried. Anything else is the server refusing this batch."""
        if e.status() in _RETRYABLE or "shared memory region" in (e.message() or ""):
            return True
        return not self._model_ready()

    def _model_ready(self) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_model_ready(self.options.model_name))
        except InferenceServerException:
            return False

    def _after_outage(self) -> None:
        """Once the server answers again: put our regions back, and make sure it serves the
        same model (a server restarted with other bytes would mix two models' detections)."""
        from tritonclient.utils import InferenceServerException

        try:
            if not self._model_ready():
                return
            config = self._client.get_model_config(self.options.model_name).config
            self._reregister_quietly()
        except InferenceServerException:  # still down: the next retry will tell
            return
        params = {k: v.string_value for k, v in config.parameters.items()}
        digest = params.get(CONFIG_PREFIX + META.DIGEST, "")
        if digest != self.model.digest:
            self._dead = (f"model {self.options.model_name!r} on Triton at {self.options.url} changed during the run "
                          f"(digest {self.model.digest[:12]} -> {digest[:12] or 'none'}); rerun to redo the files "
                          "left with the new model")
            raise ServerUnavailableError(self._dead)  # fatal, as an outage: the run stops

    def _infer_once(self, lane: int, batch: np.ndarray) -> BatchOutput:
        grpc = self._grpc
        image = grpc.InferInput(INPUT.name, list(batch.shape), INPUT.triton_dtype)
        if self._ring is not None:
            image.set_shared_memory(*self._ring.write(lane, batch))
        elif on_host(batch):
            image.set_data_from_numpy(batch)
        else:  # one device-to-host copy into pinned memory; the request serializes it
            staging = self._staging.view(lane, batch.shape)
            copy_into(staging, batch)
            image.set_data_from_numpy(staging)
        outputs = [grpc.InferRequestedOutput(DETECTIONS.name), grpc.InferRequestedOutput(NUM_DETECTIONS.name)]
        result = self._clients[lane].infer(self.options.model_name, [image], outputs=outputs,
                                           client_timeout=self.options.request_timeout_s)
        return BatchOutput(result.as_numpy(DETECTIONS.name), result.as_numpy(NUM_DETECTIONS.name))

    def _reregister_quietly(self) -> None:
        """After a server restart its registrations are gone; put ours back (if it is up)."""
        if self._ring is None:
            return
        try:
            self._ring.reregister()
        except Exception:  # still down: the next retry will tell
            pass

    def abort(self) -> None:
        """A stopping run does not wait out an outage: lanes retrying give up at once."""
        self._aborted.set()

    def busy_seconds(self) -> float:
        return self._clock.seconds

    @property
    def images_answered(self) -> int:
        """What the server's inference count must reach (:func:`client.metrics.scrape_after`)."""
        return self._clock.images

    def close(self) -> None:
        """Unregister and unlink every region; safe to call more than once, on any way out."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        for client in [self._client, *getattr(self, "_clients", [])]:
            client.close()
        self._clients = []


def _require_cuda_shm() -> None:
    import_cuda_shm()  # one line, not a traceback, without CuPy or cuda-python


def cuda_shm_refusal(url: str, detail: str | None) -> str:
    """What a refused CUDA shared-memory registration means. Triton answers only "invalid
    args" and writes the reason (cudaIpcOpenMemHandle's error) to its own log."""
    return (f"Triton at {url} cannot open our CUDA shared memory ({(detail or 'no reason given').splitlines()[0][:160]}"
            "; Triton's log says why): it must run on this machine, on the same GPU, with CUDA IPC allowed "
            "between the two processes (docker/compose.yaml shows the setup); or pass --shm system")


def check_contract(name: str, metadata, config) -> None:
    """Raise ContractMismatchError naming the first difference from the serving contract."""
    def describe(t) -> str:
        return f"{t.name} {t.datatype} {list(t.shape)}"

    expected_in = [(INPUT.name, INPUT.triton_dtype, [-1, *INPUT.dims])]
    expected_out = sorted((s.name, s.triton_dtype, [-1, *s.dims]) for s in (DETECTIONS, NUM_DETECTIONS))
    got_in = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
    got_out = sorted((t.name, t.datatype, list(t.shape)) for t in metadata.outputs)
    if got_in != expected_in:
        raise ContractMismatchError(
            f"model {name!r}: input is {', '.join(map(describe, metadata.inputs))}; the contract needs "
            f"{INPUT.name} {INPUT.triton_dtype} [-1, {', '.join(map(str, INPUT.dims))}]"
        )
    if got_out != expected_out:
        raise ContractMismatchError(
            f"model {name!r}: outputs are {', '.join(map(describe, metadata.outputs))}; the contract needs "
            + ", ".join(f"{n} {d} {s}" for n, d, s in expected_out)
        )
    if config.max_batch_size < 1:
        raise ContractMismatchError(f"model {name!r}: max_batch_size is {config.max_batch_size}; it must batch")


def served_model_info(config, url: str) -> ModelInfo:
    """Geometry, names and digest from the served config's framestream parameters; a model
    without them is refused rather than guessed at (a guess would become the resume identity)."""
    params = {k: v.string_value for k, v in config.parameters.items()}
    try:
        return ModelInfo.from_config_parameters(params, max_batch=config.max_batch_size)
    except (KeyError, ValueError) as e:
        raise ModelError(
            f"model {config.name!r} on Triton at {url} does not say which model it is (its config lacks "
            f"framestream's parameters: {e}); write them with 'python -m server_config.model stamp "
            f"<repository>/{config.name}' and restart Triton, or serve it with 'python -m server_config.local'"
        ) from e
