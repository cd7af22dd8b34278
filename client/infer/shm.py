"""Rings of Triton shared-memory regions, one region per in-flight lane.

A lane writes its batch into its own region and sends only the region's name, so K lanes
need exactly K regions. Each ring registers its regions at start and unregisters and frees
them on every way out (``close``); after a server restart, ``reregister`` puts them back.

- :class:`SystemShmRing`: POSIX shared memory (``/dev/shm``) for host batches; a GPU batch
  is copied once, straight into the region.
- :class:`CudaShmRing`: CUDA IPC memory for GPU batches, each region with one CuPy view
  made once; tritonclient's ``set_shared_memory_region_from_dlpack`` copies as well, and
  per-call DLPack views of shared-memory tensors have been reported to leak.
"""

from __future__ import annotations

import os
from multiprocessing import shared_memory

import numpy as np

from ..contract import INPUT
from ..errors import ServerError


def region_names(prefix: str, lanes: int) -> list[str]:
    return [f"{prefix}_{lane}" for lane in range(lanes)]


def ring_prefix(kind: str) -> str:
    return f"framestream_{kind}_{os.getpid()}_{id(object()) & 0xFFFF:x}"


class SystemShmRing:
    def __init__(self, client, lanes: int, byte_size: int) -> None:
        self._client = client
        self.regions: list[shared_memory.SharedMemory] = []
        try:
            for name in region_names(ring_prefix("sys"), lanes):
                self.regions.append(shared_memory.SharedMemory(name=name, create=True, size=byte_size))
            self.reregister()
        except BaseException:
            self.close()
            raise

    def reregister(self) -> None:
        registered = set(self._client.get_system_shared_memory_status().regions)
        for region in self.regions:
            if region.name not in registered:
                self._client.register_system_shared_memory(region.name, "/" + region.name, region.size)

    def write(self, lane: int, batch) -> tuple[str, int]:
        region = self.regions[lane]
        host = np.ndarray(batch.shape, INPUT.numpy_dtype, buffer=region.buf)
        if isinstance(batch, np.ndarray):
            host[...] = batch
        else:
            batch.get(out=host)  # the one copy from the GPU, straight into shared memory
        return region.name, host.nbytes

    def close(self) -> None:
        for region in self.regions:
            try:
                self._client.unregister_system_shared_memory(region.name)
            except Exception:  # server gone: its registrations went with it
                pass
            region.close()
            try:
                region.unlink()
            except FileNotFoundError:
                pass
        self.regions.clear()


class CudaShmRing:
    def __init__(self, client, lanes: int, byte_size: int, device_id: int = 0) -> None:
        import cupy as cp
        import tritonclient.utils.cuda_shared_memory as cudashm

        self._client, self._cudashm, self.device_id = client, cudashm, device_id
        self.byte_size = byte_size
        self.handles: list = []
        self.views: list = []
        try:
            for name in region_names(ring_prefix("cuda"), lanes):
                handle = cudashm.create_shared_memory_region(name, byte_size, device_id)
                self.handles.append((name, handle))
                ptr = getattr(handle, "_base_addr", None)
                if ptr is None:
                    raise ServerError("this tritonclient's CUDA shared-memory handle has no device address")
                memory = cp.cuda.UnownedMemory(int(ptr), byte_size, handle, device_id)
                self.views.append(cp.ndarray((byte_size,), cp.uint8, cp.cuda.MemoryPointer(memory, 0)))
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

    def write(self, lane: int, batch) -> tuple[str, int]:
        """Copy a batch into the lane's region (device to device for CuPy); return (region, bytes)."""
        import cupy as cp

        flat = cp.asarray(batch).reshape(-1)
        self.views[lane][: flat.size] = flat
        return self.handles[lane][0], int(flat.size)

    def close(self) -> None:
        for name, handle in self.handles:
            try:
                self._client.unregister_cuda_shared_memory(name)
            except Exception:  # server gone: its registrations went with it
                pass
            self._cudashm.destroy_shared_memory_region(handle)
        self.handles.clear()
        self.views.clear()
