"""A ring of Triton CUDA shared-memory regions, one per in-flight lane, with CuPy views.

Each region gets one CuPy view, built once, that the batch is copied into on the device;
tritonclient's ``set_shared_memory_region_from_dlpack`` copies as well and per-call DLPack
views of shared-memory tensors have been reported to leak, so neither is used per batch.
Regions are registered at start and unregistered and freed on every way out (``close``).
"""

from __future__ import annotations

import os

from ..errors import ServerError


def region_names(prefix: str, lanes: int) -> list[str]:
    return [f"{prefix}_{lane}" for lane in range(lanes)]


def ring_prefix(kind: str) -> str:
    return f"framestream_{kind}_{os.getpid()}"


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
                client.register_cuda_shared_memory(name, cudashm.get_raw_handle(handle), device_id, byte_size)
        except BaseException:
            self.close()
            raise

    def write(self, lane: int, batch) -> tuple[str, int]:
        """Copy a CuPy batch into the lane's region (device to device); return (region, bytes)."""
        flat = batch.reshape(-1)
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
