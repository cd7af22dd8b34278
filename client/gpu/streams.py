"""CUDA streams and events between decoder threads and lanes: who waits for what.

Decoding and letterboxing run in different threads, so their order must be stated, not left
to the legacy default stream (per-thread default streams, or a decoder on a non-blocking
stream of its own, would break it):

- each decoder has a stream of its own, given to NVDEC, so the decoder's writes, our copy of
  its surface and its next ``Decode()`` are ordered on it; after the copy it records an
  event, which travels with the frame (:class:`Ready`);
- each lane has a stream of its own, made current in the lane's thread; before its letterbox
  kernel reads a decoder's copy it waits for that copy's event (:meth:`Lanes.wait`), and before
  inference reads the batch (onnxruntime on its own stream, or Triton in another process) it
  synchronizes its stream (:meth:`Lanes.finish`). The frames of a batch, and so their copies,
  live until the lane's ``infer`` returns, after that synchronization, so the memory pool
  cannot hand a copy's memory back to its decoder while a kernel still reads it.

Every operation goes through :class:`DeviceOps`: CuPy on a GPU (:class:`CupyOps`), a recorder
that checks the ordering in the tests (``tests/test_gpu_streams.py``).
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Protocol

__all__ = ["DeviceOps", "CupyOps", "Ready", "DecoderStream", "Lanes", "cupy_ops"]


class DeviceOps(Protocol):
    """The few stream operations the hand-off needs."""

    def stream(self, device_id: int) -> Any:
        """A new non-blocking stream on the device."""
        ...

    def current(self) -> Any:
        """The calling thread's current stream (where CuPy launches work)."""
        ...

    def use(self, stream: Any) -> None:
        """Make ``stream`` the calling thread's current stream."""
        ...

    def on(self, stream: Any) -> ContextManager[Any]:
        """``stream`` current (and its device active) for the block."""
        ...

    def record(self, stream: Any) -> Any:
        """An event that completes when the work enqueued on ``stream`` so far has."""
        ...

    def wait(self, stream: Any, event: Any) -> None:
        """Work enqueued on ``stream`` after this starts after ``event``."""
        ...

    def synchronize(self, stream: Any) -> None:
        """Block the calling thread until ``stream``'s work is done."""
        ...


class CupyOps:
    """:class:`DeviceOps` on CuPy (imported on first use)."""

    def stream(self, device_id: int) -> Any:
        import cupy as cp

        with cp.cuda.Device(device_id):
            return cp.cuda.Stream(non_blocking=True)

    def current(self) -> Any:
        import cupy as cp

        return cp.cuda.get_current_stream()

    def use(self, stream: Any) -> None:
        import cupy as cp

        cp.cuda.Device(stream.device_id).use()
        stream.use()

    def on(self, stream: Any) -> ContextManager[Any]:
        import cupy as cp

        block = ExitStack()
        block.enter_context(cp.cuda.Device(stream.device_id))
        block.enter_context(stream)
        return block

    def record(self, stream: Any) -> Any:
        return stream.record()

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()


_CUPY = CupyOps()


def cupy_ops() -> DeviceOps:
    return _CUPY


@dataclass(frozen=True)
class Ready:
    """A device array made on another thread's stream, and the event after which it may be read."""

    array: Any
    event: Any


class DecoderStream:
    """One decoder's stream: hand its pointer to NVDEC, :meth:`keep` each surface it returns."""

    def __init__(self, device_id: int, ops: DeviceOps | None = None) -> None:
        self.ops = ops or cupy_ops()
        self.stream = self.ops.stream(device_id)

    def keep(self, copy: Callable[[], Any]) -> Ready:
        """Run ``copy`` (a copy of the decoder's surface, which it reuses) on this stream and
        record when it is done."""
        with self.ops.on(self.stream):
            array = copy()
        return Ready(array, self.ops.record(self.stream))


class Lanes:
    """One stream per lane. :meth:`enter` in the lane's thread before filling its batch;
    :meth:`finish` before anything outside the stream reads the batch."""

    def __init__(self, lanes: int, device_id: int, ops: DeviceOps | None = None) -> None:
        self.ops = ops or cupy_ops()
        self._streams = [self.ops.stream(device_id) for _ in range(lanes)]
        self._entered = threading.local()

    def enter(self, lane: int) -> None:
        stream = self._streams[lane]
        if getattr(self._entered, "stream", None) is not stream:
            self.ops.use(stream)
            self._entered.stream = stream

    def finish(self, lane: int) -> None:
        self.ops.synchronize(self._streams[lane])

    @staticmethod
    def wait(ready: Ready, ops: DeviceOps) -> None:
        """Before reading ``ready.array`` on the calling thread's current stream."""
        ops.wait(ops.current(), ready.event)
