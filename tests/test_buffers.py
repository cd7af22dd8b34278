"""Batch buffers, host/device copies and the busy clock: backend helpers that need no GPU."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from client.arrays import copy_into
from client.decode import DecodedFrame, Letterboxed
from client.infer.buffers import LaneBuffers, host
from client.infer.busy import BusyClock
from client.letterbox import plan_letterbox


def test_each_lane_reuses_one_buffer_and_grows_it_only_when_a_batch_needs_more() -> None:
    buffers = LaneBuffers(2, host)
    a = buffers.view(0, (2, 4, 6, 3))
    b = buffers.view(0, (1, 8, 6, 3))  # another shape, fewer bytes: same memory
    assert a.flags.c_contiguous and b.flags.c_contiguous
    assert np.shares_memory(a, b)
    assert not np.shares_memory(a, buffers.view(1, (2, 4, 6, 3)))  # lanes never share
    c = buffers.view(0, (4, 4, 6, 3))  # more bytes: a bigger buffer
    assert c.shape == (4, 4, 6, 3) and not np.shares_memory(a, c)
    assert np.shares_memory(c, buffers.view(0, (3, 4, 6, 3)))


def test_frames_written_into_slots_make_the_stacked_batch() -> None:
    plan = plan_letterbox((96, 160), (320, 320), minimal=True)
    rng = np.random.default_rng(0)
    frames = [DecodedFrame(i, i / 10, Letterboxed(rng.integers(0, 255, (*plan.dst_hw, 3), dtype=np.uint8)), plan)
              for i in range(3)]
    batch = LaneBuffers(1, host).view(0, (3, *plan.dst_hw, 3))
    for slot, frame in enumerate(frames):
        frame.picture.write_into(batch[slot])
    np.testing.assert_array_equal(batch, np.stack([f.image for f in frames]))


def test_copy_into_host_arrays_copies_values_not_references() -> None:
    src = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    out = np.zeros_like(src)
    copy_into(out, src)
    src[:] = 0
    assert out.sum() == sum(range(24))


def test_the_busy_clock_sums_the_calls_of_every_lane_and_leaves_out_calls_that_failed() -> None:
    ticks = iter([0.0, 1.5, 10.0, 10.25, 20.0, 99.0])  # three calls: 1.5 s, 0.25 s, and one that raises
    clock = BusyClock(now=lambda: next(ticks))
    with clock.measure(8):
        pass
    with clock.measure(3):
        pass
    with pytest.raises(RuntimeError):
        with clock.measure(8):
            raise RuntimeError("server refused the batch")
    assert clock.seconds == 1.75
    assert clock.images == 11


def test_the_busy_clock_loses_no_call_when_lanes_finish_at_once() -> None:
    clock = BusyClock(now=lambda: 0.0)
    start = threading.Barrier(8)

    def lane() -> None:
        start.wait()
        for _ in range(2000):
            with clock.measure(1):
                pass

    threads = [threading.Thread(target=lane) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.images == 16000
