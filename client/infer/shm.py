"""Rings of Triton shared-memory regions, one region per in-flight lane.

A lane's batch is built in its own region (``view``: the pipeline writes each frame into its
slot there) and the request carries only the region's name, so K lanes need exactly K
regions. Each ring registers its regions at start and unregisters and frees them on every
way out (``close``, which waits out Triton's "in use" refusal: :func:`unregister`); after a
server restart, ``reregister`` puts them back.

- :class:`SystemShmRing`: POSIX shared memory (``/dev/shm``) for host batches.
- :class:`CudaShmRing`: CUDA IPC memory for GPU batches, each region with one CuPy view
  made once through tritonclient's public DLPack face (``as_shared_memory_tensor``), which
  the letterbox kernel writes into; tritonclient's ``set_shared_memory_region_from_dlpack``
  copies, and per-call DLPack views of shared-memory tensors have been reported to leak.

``write`` takes the view back without a copy; any other array is copied in once. A CUDA
ring's lanes write on streams of their own, synchronized before Triton, another process,
reads the region (:mod:`client.gpu.streams`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from multiprocessing import shared_memory
from typing import Callable

import numpy as np

from .. import defaults
from ..arrays import copy_into, on_host
from ..errors import ServerError, UsageError
from ..gpu.streams import Lanes


log = logging.getLogger(__name__)


def unregister(call: Callable[[str], object], name: str, *, wait_s: float = defaults.SHM_RELEASE_WAIT_S) -> bool:
    """Unregister region ``name`` with ``call``; whether the server let it go.

    Triton (2.50+) counts the requests using a region and refuses ("currently in use") until
    the last one is released, a moment after its response reached us: that refusal is retried
    for ``wait_s``. Any other failure means the server is gone, and its registrations with it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            call(name)
            return True
        except Exception as e:  # tritonclient's InferenceServerException, or the channel's errors
            if "in use" not in str(e):
                return False
            if time.monotonic() >= deadline:
                log.warning("Triton still holds shared-memory region %s after %.0f s (a request is using it); "
                            "it stays registered until the server restarts", name, wait_s)
                return False
        time.sleep(0.02)


def region_names(prefix: str, lanes: int) -> list[str]:
    return [f"{prefix}_{lane}" for lane in range(lanes)]


def ring_prefix(kind: str) -> str:
    """Unique per ring: a name reused by a later ring of the same process could meet a stale
    registration of the earlier one on the server (``id(object())`` repeats; a token does not)."""
    return f"framestream_{kind}_{os.getpid()}_{secrets.token_hex(4)}"


def _check_fits(shape: tuple[int, ...], byte_size: int) -> int:
    n = math.prod(shape)
    if n > byte_size:
        raise ServerError(f"a batch of {list(shape)} needs {n} bytes; the shared-memory regions hold {byte_size}")
    return n


class SystemShmRing:
    def __init__(self, client, lanes: int, byte_size: int) -> None:
        self._client = client
        self.byte_size = byte_size
        self.regions: list[shared_memory.SharedMemory] = []
        self._flat: list[np.ndarray] = []  # one NumPy view per region, made once
        try:
            for name in region_names(ring_prefix("sys"), lanes):
                region = shared_memory.SharedMemory(name=name, create=True, size=byte_size)
                self.regions.append(region)
                self._flat.append(np.ndarray((byte_size,), np.uint8, buffer=region.buf))
            self.reregister()
        except BaseException:
            self.close()
            raise

    def reregister(self) -> None:
        registered = set(self._client.get_system_shared_memory_status().regions)
        for region in self.regions:
            if region.name not in registered:
                self._client.register_system_shared_memory(region.name, "/" + region.name, region.size)

    def view(self, lane: int, shape: tuple[int, ...]) -> np.ndarray:
        """The lane's region as a batch of ``shape``: write frames here, then :meth:`write`."""
        return self._flat[lane][: _check_fits(shape, self.byte_size)].reshape(shape)

    def write(self, lane: int, batch) -> tuple[str, int]:
        """The region carrying ``batch`` and its size; copied in unless it is :meth:`view`'s."""
        flat = self._flat[lane]
        if not (isinstance(batch, np.ndarray) and batch.ctypes.data == flat.ctypes.data):
            copy_into(self.view(lane, batch.shape), batch)
        return self.regions[lane].name, int(batch.nbytes)

    def close(self) -> None:
        for region in self.regions:
            unregister(self._client.unregister_system_shared_memory, region.name)
            region.close()
            try:
                region.unlink()
            except FileNotFoundError:
                pass
        self.regions.clear()
        self._flat.clear()


def import_cuda_shm():
    """CuPy and tritonclient's CUDA shared-memory module, or one line saying what to install.
    tritonclient raises RuntimeError, not ImportError, when ``cuda-python`` is missing."""
    try:
        import cupy  # noqa: F401
        import tritonclient.utils.cuda_shared_memory as cudashm
    except (ImportError, RuntimeError) as e:
        raise UsageError(f"--shm cuda needs CuPy and tritonclient's CUDA shared memory "
                         f"({str(e).splitlines()[0][:160]}): pip install 'framestream[gpu]' "
                         "(it brings tritonclient[cuda], i.e. cuda-python), or use --shm system") from e
    return cudashm


class CudaShmRing:
    def __init__(self, client, lanes: int, byte_size: int, device_id: int = 0) -> None:
        import cupy as cp

        cudashm = import_cuda_shm()
        self._client, self._cudashm, self.device_id = client, cudashm, device_id
        self.byte_size = byte_size
        self._lanes = Lanes(lanes, device_id)
        self.handles: list = []
        self.views: list = []
        try:
            for name in region_names(ring_prefix("cuda"), lanes):
                try:
                    handle = cudashm.create_shared_memory_region(name, byte_size, device_id)
                except cudashm.CudaSharedMemoryException as e:
                    raise UsageError(f"cannot allocate a {byte_size}-byte CUDA shared-memory region on GPU {device_id} "
                                     f"({str(e).splitlines()[0][:160]}); lower --batch or use --shm system") from e
                self.handles.append((name, handle))  # owns the memory: kept until close()
                tensor = cudashm.as_shared_memory_tensor(handle, "UINT8", [byte_size])
                self.views.append(cp.from_dlpack(tensor))  # a view of the region, no copy
            self.reregister()
        except BaseException:
            self.close()
            raise

    def reregister(self) -> None:
        status = getattr(self._client, "get_cuda_shared_memory_status", None)
        registered = set(status().regions) if status else set()
        for name, handle in self.handles:
            if name not in registered:
                self._client.register_cuda_shared_memory(name, self._cudashm.get_raw_handle(handle), self.device_id,
                                                         self.byte_size)

    def view(self, lane: int, shape: tuple[int, ...]):
        """The lane's region as a CuPy batch of ``shape``: the letterbox kernel writes here, on
        the lane's stream (made current in the calling thread)."""
        self._lanes.enter(lane)
        return self.views[lane][: _check_fits(shape, self.byte_size)].reshape(shape)

    def write(self, lane: int, batch) -> tuple[str, int]:
        """The region carrying ``batch`` once the GPU has finished writing it; copied in
        (device to device, or uploaded) unless it is :meth:`view`'s."""
        self._lanes.enter(lane)
        if on_host(batch) or batch.data.ptr != self.views[lane].data.ptr:
            copy_into(self.view(lane, batch.shape), batch)
        self._lanes.finish(lane)  # Triton reads the region from another process
        return self.handles[lane][0], int(batch.nbytes)

    def close(self) -> None:
        self.views.clear()  # before the memory they view is freed
        for name, handle in self.handles:
            unregister(self._client.unregister_cuda_shared_memory, name)
            self._cudashm.destroy_shared_memory_region(handle)
        self.handles.clear()
