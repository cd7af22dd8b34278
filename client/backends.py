"""A run's machine set-up from its :class:`~client.options.BulkOptions`: the GPU path or not, the
GPUs, the decoders, the thread budget, the pipeline's configuration and the inference backend.

The command line's local run and each Ray node's worker (:mod:`client.ray_worker`) set up the
same way through these functions, so the two cannot drift. :func:`make_backend` is the seam a
test wraps to inject a fault into the backend a run uses: replace ``client.backends.make_backend``
(callers look it up on this module at call time), as ``tests/fault_runner.py`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import defaults
from .errors import UsageError
from .infer import Backend
from .options import BulkOptions
from .pipeline import PipelineConfig
from .threads import ThreadBudget
from .wording import counted

log = logging.getLogger(__name__)

__all__ = ["LocalBackend", "use_gpu", "gpu_devices", "worker_count", "thread_budget", "pipeline_config", "make_backend",
           "start_local"]

@dataclass(frozen=True)
class LocalBackend:
    """A machine's backend and how the run uses it there: its pipeline, its thread budget."""

    backend: Backend
    config: PipelineConfig
    budget: ThreadBudget


# Where the NVIDIA driver lists the GPUs it drives (one folder each), and its first device node.
_NVIDIA_GPUS, _NVIDIA_DEVICE = Path("/proc/driver/nvidia/gpus"), Path("/dev/nvidia0")


def use_gpu(options: BulkOptions) -> tuple[bool, str]:
    """--device: auto takes the GPU path when everything it needs works; returns the choice and why."""
    if options.device == "cpu":
        return False, "--device cpu"
    from .gpu import GpuProbe, probe

    found = probe()
    if found.ok and options.embedded:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            found = GpuProbe(False, "onnxruntime has no CUDA provider (pip install 'framestream[gpu]')")
    if options.device == "gpu" and not found.ok:
        raise UsageError(f"--device gpu: {found.reason}")
    if not found.ok and not _nvidia_gpu_present():  # auto on a machine without one: nothing to install
        return False, "no NVIDIA GPU here"
    return found.ok, found.reason


def _nvidia_gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, asked of the driver's files, not of CuPy: what the
    GPU path lacks (CuPy, PyNvVideoCodec) is worth saying only where there is a GPU to use."""
    try:
        return _NVIDIA_DEVICE.exists() or any(_NVIDIA_GPUS.iterdir())
    except OSError:
        return False


def gpu_devices(options: BulkOptions, gpu: bool) -> list[int]:
    """The GPUs this run uses (``[0]`` on the CPU path, where --devices means nothing)."""
    if not gpu:
        if options.devices is not None:
            log.warning("--devices %s is not used on the CPU path", options.devices)
        return [0]
    from .devices import select_devices, visible_gpus

    return select_devices(options.devices, visible_gpus())


def worker_count(options: BulkOptions, gpu: bool, device: int | None = 0) -> int:
    """Decoders at once: --workers, else its default, chosen here only. The CPU path:
    :data:`~client.defaults.CPU_WORKERS`; the GPU path: one NVDEC session per decode engine of
    GPU ``device``; ``device=None`` (the GPUs are on other machines: a Ray driver):
    :data:`~client.defaults.GPU_WORKERS`."""
    if options.workers is not None:
        return options.workers
    if not gpu:
        return defaults.CPU_WORKERS
    if device is None:
        return defaults.GPU_WORKERS
    from .gpu.engines import gpu_workers

    return gpu_workers(device)


def thread_budget(options: BulkOptions, gpu: bool, workers: int) -> ThreadBudget:
    """The usable CPUs (affinity, cgroup quota) split between onnxruntime, FFmpeg and OpenCV."""
    from .threads import apply_opencv, split_budget, usable_cpus

    budget = split_budget(usable_cpus(), workers=workers, sessions=options.sessions,
                          cpu_inference=options.embedded and not gpu)
    apply_opencv(budget)
    return budget


def pipeline_config(options: BulkOptions, *, gpu: bool, workers: int, device: int,
                    budget: ThreadBudget | None) -> PipelineConfig:
    """The pipeline's configuration, the same on one machine and on every Ray node."""
    return PipelineConfig(batch=options.batch, workers=workers, square=options.square, sampling=options.sampling,
                          gpu=gpu, gpu_device=device, decode_threads=budget.decode_threads if budget else 0)


def make_backend(options: BulkOptions, model_path: Path | None, gpu: bool, *, sessions: int | None = None,
                 device: int = 0) -> Backend:
    """The backend the options choose (Triton with --server, else embedded on the GPU or the
    CPU); each Ray node's worker builds its own the same way. Tests replace it (module docstring)."""
    if options.embedded and gpu:
        from .infer.embedded_gpu import EmbeddedGpuBackend

        backend: Backend = EmbeddedGpuBackend(model_path, sessions=options.sessions or defaults.GPU_SESSIONS,
                                              device_id=device)
        log.info("embedded onnxruntime-gpu on GPU %d: %s; model %s", device, counted(backend.lanes, "session"),
                 model_path)
        return backend
    if options.embedded:
        from .infer.embedded import EmbeddedBackend

        cpu = EmbeddedBackend(model_path, sessions=sessions)
        log.info("embedded onnxruntime: %s; model %s (%s)", counted(cpu.lanes, "session"), model_path,
                 cpu.model.source)
        return cpu
    from .infer.triton import TritonBackend, TritonOptions

    triton = TritonBackend(TritonOptions(url=options.server, model_name=options.model_name, inflight=options.inflight,
                                         shm=options.shm, retry_seconds=options.retry_seconds),
                           batch=options.batch, gpu_frames=gpu, device_id=device)
    log.info("Triton %s model %r (%s, digest %s): %s in flight at most, inputs via %s", options.server,
             options.model_name, triton.model.source, triton.model.digest[:12], counted(triton.lanes, "request"),
             f"{triton.shm} shared memory" if triton.shm else "the gRPC payload")
    return triton


def start_local(options: BulkOptions, model_path: Path | None, gpu: bool, device: int = 0) -> LocalBackend:
    """This machine's set-up, the same for a local run (GPU ``device``) and a Ray node's worker
    (the GPU Ray gave it, 0): decoders, the CPU budget, the backend (through :func:`make_backend`,
    looked up at call time: the seam tests wrap) and the pipeline's configuration."""
    workers = worker_count(options, gpu, device)
    budget = thread_budget(options, gpu, workers)  # this machine's CPUs (affinity, cgroup)
    backend = make_backend(options, model_path, gpu, sessions=budget.sessions or options.sessions, device=device)
    return LocalBackend(backend, pipeline_config(options, gpu=gpu, workers=workers, device=device, budget=budget),
                        budget)
