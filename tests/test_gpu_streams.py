"""The decoder-to-lane hand-off on the GPU, run on a recording device (no GPU needed).

``RecordingDevice`` implements :class:`client.gpu.streams.DeviceOps`: every array remembers
the stream and position of its last write, every read checks that the write is ordered before
it (the same stream earlier, a wait on an event recorded after the write, or, for the host, a
synchronization), and a read that is not ordered raises. Decoder and lane threads are real
threads, as in the pipeline.
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from client.colour import select_colour
from client.gpu.letterbox import Nv12Picture
from client.gpu.streams import DecoderStream, Lanes
from client.letterbox import plan_letterbox


class UnorderedRead(AssertionError):
    """A read that may see the data before its write is done."""


@dataclass(eq=False)
class Stream:
    name: str
    length: int = 0  # operations enqueued so far
    waits: list[tuple[int, "Event"]] = field(default_factory=list)  # (position, event waited for there)
    synchronized: int = 0  # operations the host has seen complete


@dataclass(frozen=True, eq=False)
class Event:
    stream: Stream
    position: int  # completes when the stream's first `position` operations have


@dataclass(eq=False)
class Array:
    """Device memory: [rows, width] as far as nv12_planes cares; views share the base's writes."""

    shape: tuple[int, ...]
    written: tuple[Stream, int] | None = None
    base: "Array | None" = None

    def __getitem__(self, rows: slice) -> "Array":
        return Array((len(range(*rows.indices(self.shape[0]))), *self.shape[1:]), base=self.root())

    def root(self) -> "Array":
        return self.base or self


class RecordingDevice:
    """:class:`DeviceOps` that checks the happens-before of every device and host read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.default = Stream("default")
        self._current = threading.local()
        self.streams: list[Stream] = []

    # -- DeviceOps -----------------------------------------------------------------------------
    def stream(self, device_id: int) -> Stream:
        with self.lock:
            s = Stream(f"stream{len(self.streams)}@{device_id}")
            self.streams.append(s)
            return s

    def current(self) -> Stream:
        return getattr(self._current, "stream", self.default)

    def use(self, stream: Stream) -> None:
        self._current.stream = stream

    @contextmanager
    def on(self, stream: Stream):
        before = self.current()
        self.use(stream)
        try:
            yield stream
        finally:
            self.use(before)

    def record(self, stream: Stream) -> Event:
        with self.lock:
            return Event(stream, stream.length)

    def wait(self, stream: Stream, event: Event) -> None:
        with self.lock:
            stream.waits.append((stream.length, event))

    def synchronize(self, stream: Stream) -> None:
        with self.lock:
            stream.synchronized = stream.length

    # -- what kernels and copies do ------------------------------------------------------------
    def write(self, array: Array) -> None:
        with self.lock:
            stream = self.current()
            stream.length += 1
            array.root().written = (stream, stream.length)

    def read_on_device(self, array: Array) -> None:
        with self.lock:
            stream = self.current()
            written = array.root().written
            if written is None:
                raise UnorderedRead(f"{stream.name} reads memory nothing wrote")
            by, at = written
            ordered = by is stream or any(ev.stream is by and ev.position >= at and pos <= stream.length
                                          for pos, ev in stream.waits)
            if not ordered:
                raise UnorderedRead(f"{stream.name} reads what {by.name} wrote without waiting for it")
            stream.length += 1

    def read_on_host(self, array: Array) -> None:
        with self.lock:
            by, at = array.root().written
            if by.synchronized < at:
                raise UnorderedRead(f"the host reads what {by.name} wrote before synchronizing it")


class RecordingKernel:
    """The letterbox kernel's memory traffic: reads the surface's planes, writes the slot."""

    def __init__(self, device: RecordingDevice) -> None:
        self.device = device

    def __call__(self, luma, chroma, plan, colour, out=None, turns=0):
        self.device.read_on_device(luma)
        self.device.read_on_device(chroma)
        out = out if out is not None else Array((*plan.dst_hw, 3))
        self.device.write(out)
        return out


PLAN = plan_letterbox((96, 160), (64, 64), minimal=False)
COLOUR = select_colour(None, None)


def decode(device: RecordingDevice, frames: int, out: queue.Queue) -> None:
    """A decoder thread: NVDEC writes each surface on the decoder's stream, we copy it there."""
    stream = DecoderStream(0, device)
    kernel = RecordingKernel(device)
    for _ in range(frames):
        surface = Array((144, 160))
        with device.on(stream.stream):
            device.write(surface)  # the decoder's own write, on the stream it was given

        def copy(surface=surface) -> Array:
            device.read_on_device(surface)
            mine = Array((144, 160))
            device.write(mine)
            return mine

        out.put(Nv12Picture(stream.keep(copy), PLAN, COLOUR, kernel, 0, device))


def test_lanes_read_decoder_copies_only_after_their_events_and_the_host_after_the_lane_synchronized() -> None:
    device = RecordingDevice()
    pictures: queue.Queue = queue.Queue()
    decoders = [threading.Thread(target=decode, args=(device, 12, pictures)) for _ in range(2)]
    for t in decoders:
        t.start()
    for t in decoders:
        t.join()
    lanes = Lanes(2, 0, device)
    failures: list[BaseException] = []

    def lane(index: int) -> None:
        try:
            while True:
                try:
                    batch = [pictures.get_nowait() for _ in range(4)]
                except queue.Empty:
                    return
                lanes.enter(index)
                slots = [Array((*PLAN.dst_hw, 3)) for _ in batch]
                for picture, slot in zip(batch, slots):
                    picture.write_into(slot)
                lanes.finish(index)
                for slot in slots:  # what inference (onnxruntime's stream, Triton's process) reads
                    device.read_on_host(slot)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failures.append(e)

    workers = [threading.Thread(target=lane, args=(i,)) for i in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not failures, failures
    assert pictures.empty()
    assert len({id(s) for s in device.streams}) == 4, "two decoders and two lanes, each on a stream of its own"


def test_the_recording_device_catches_a_kernel_that_does_not_wait_for_the_decoder_s_copy() -> None:
    """The check above can fail: the old hand-off (launch on the lane's stream, no wait) is caught."""
    device = RecordingDevice()
    pictures: queue.Queue = queue.Queue()
    decode(device, 1, pictures)
    picture = pictures.get()
    lanes = Lanes(1, 0, device)
    lanes.enter(0)
    with pytest.raises(UnorderedRead, match="without waiting"):
        picture.kernel(picture.nv12.array[:96], picture.nv12.array[96:], PLAN, COLOUR, Array((*PLAN.dst_hw, 3)))


def test_the_recording_device_catches_a_batch_read_before_its_lane_synchronized() -> None:
    device = RecordingDevice()
    pictures: queue.Queue = queue.Queue()
    decode(device, 1, pictures)
    lanes = Lanes(1, 0, device)
    lanes.enter(0)
    slot = Array((*PLAN.dst_hw, 3))
    pictures.get().write_into(slot)
    with pytest.raises(UnorderedRead, match="before synchronizing"):
        device.read_on_host(slot)
    lanes.finish(0)
    device.read_on_host(slot)


def test_a_lane_thread_keeps_its_own_stream_current_and_another_lane_s_thread_gets_its_own() -> None:
    device = RecordingDevice()
    lanes = Lanes(2, 0, device)
    seen: dict[int, Stream] = {}

    def run(index: int) -> None:
        lanes.enter(index)
        seen[index] = device.current()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[0] is not seen[1] and device.default not in seen.values()
    assert device.current() is device.default, "the test's own thread was never switched"
