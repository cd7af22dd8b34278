"""The GPU path on a real GPU (marker ``gpu``): skipped with the reason where there is none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.colour import nv12_to_rgb_reference
from client.decode import Sampling
from client.decode.pyav_source import PyAVSource
from client.gpu import probe
from client.letterbox import letterbox_reference, plan_letterbox

from .videos import write_video

FOUND = probe()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not FOUND.ok, reason=f"no GPU path here: {FOUND.reason}")]

PLAN = lambda hw: plan_letterbox(hw, (640, 640), minimal=True)  # noqa: E731


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gpu_clips")
    return {
        "1080p_bframes": write_video(d / "hd.mp4", frames=48, size_wh=(1920, 1080), gop=24, bframes=2),
        "360p": write_video(d / "sd.mp4", frames=30, size_wh=(640, 360), gop=10),
        "odd": write_video(d / "odd.mp4", frames=12, size_wh=(642, 362), gop=12),
        "rotated": write_video(d / "rot.mp4", frames=20, size_wh=(640, 360), gop=5, bframes=1, rotation=90),
        "bt709_full": write_video(d / "709.mp4", frames=10, size_wh=(1280, 720), gop=5, colour=(1, 2)),
    }


def nvdec(path: Path, sampling: Sampling = Sampling(), frame_range=None):
    from client.decode.nvdec_source import NvdecSource
    from client.gpu.letterbox import GpuLetterbox

    with NvdecSource(path, sampling=sampling, letterbox=GpuLetterbox(), frame_range=frame_range) as src:
        return list(src.frames(PLAN))


def pyav(path: Path, sampling: Sampling = Sampling(), frame_range=None):
    with PyAVSource(path, sampling=sampling, frame_range=frame_range) as src:
        return list(src.frames(PLAN))


def segments(path: Path) -> list:
    """One FrameRange per GOP, every frame selected, as the scheduler would cut the file."""
    from client.decode import FrameRange
    from client.decode.layout import read_layout

    layout = read_layout(path)
    index_of_pts = {pts: i for i, pts in enumerate(layout.pts)}
    keys = [*layout.key_indices, len(layout.pts)]
    everything = frozenset(range(len(layout.pts)))
    return [FrameRange(a, b, layout.pts[a], everything, index_of_pts, expected=b - a) for a, b in zip(keys, keys[1:])]


@pytest.mark.parametrize("name", ["1080p_bframes", "360p", "odd", "rotated"])
@pytest.mark.parametrize("sampling", [Sampling(), Sampling(every=5), Sampling(fps=7), Sampling(keyframes=True)])
def test_nvdec_numbers_and_times_frames_exactly_as_pyav(clips, name, sampling) -> None:
    gpu, cpu = nvdec(clips[name], sampling), pyav(clips[name], sampling)
    assert [f.index for f in gpu] == [f.index for f in cpu]
    np.testing.assert_allclose([f.t for f in gpu], [f.t for f in cpu], atol=1e-6)


@pytest.mark.parametrize("name", ["1080p_bframes", "360p", "odd"])
def test_gpu_letterbox_matches_the_numpy_reference_on_the_same_nv12(clips, name) -> None:
    import cupy as cp
    import PyNvVideoCodec as nvc

    from client.colour import select_colour
    from client.decode.nvdec_source import _surface_copy
    from client.gpu.letterbox import GpuLetterbox, nv12_planes

    demuxer = nvc.CreateDemuxer(filename=str(clips[name]))
    decoder = nvc.CreateDecoder(gpuid=0, codec=demuxer.GetNvCodecId(), usedevicememory=True)
    frame = next(f for packet in demuxer for f in decoder.Decode(packet))
    nv12 = _surface_copy(frame)
    h, w = pyav(clips[name])[0].plan.src_hw
    plan = PLAN((h, w))
    colour = select_colour(None, None)
    gpu = cp.asnumpy(GpuLetterbox()(*nv12_planes(nv12), plan, colour))
    expected = letterbox_reference(nv12_to_rgb_reference(cp.asnumpy(nv12), w, h, colour), plan)
    within = np.abs(gpu.astype(int) - expected.astype(int)) <= 2
    assert within.mean() >= 0.999, f"{within.mean():.5f} of pixels within 2 levels"


@pytest.mark.parametrize("name", ["1080p_bframes", "360p", "odd", "rotated", "bt709_full"])
def test_gpu_letterbox_matches_the_cpu_path(clips, name) -> None:
    """The issue's bar: NVDEC + CUDA letterbox against PyAV + OpenCV, frame by frame."""
    from client.decode.pyav_source import opencv

    if opencv() is None:
        pytest.skip("the CPU path is exact only with OpenCV (framestream[exact])")
    import cupy as cp

    gpu, cpu = nvdec(clips[name]), pyav(clips[name])
    diff = np.abs(np.stack([cp.asnumpy(f.image) for f in gpu]).astype(int) - np.stack([f.image for f in cpu]))
    assert (diff <= 2).mean() >= 0.999, f"{(diff <= 2).mean():.5f} of pixels within 2 levels"


@pytest.mark.parametrize("name", ["1080p_bframes", "rotated"])
def test_nvdec_segments_give_exactly_the_frames_pyav_segments_give(clips, name) -> None:
    import cupy as cp

    ranges = segments(clips[name])
    assert len(ranges) >= 2
    for r in ranges:
        gpu, cpu = nvdec(clips[name], frame_range=r), pyav(clips[name], frame_range=r)
        assert [f.index for f in gpu] == [f.index for f in cpu] == list(range(r.start, r.end))
        np.testing.assert_allclose([f.t for f in gpu], [f.t for f in cpu], atol=1e-6)
        diff = np.abs(cp.asnumpy(gpu[-1].image).astype(int) - cpu[-1].image)
        assert (diff <= 2).mean() >= 0.999


def test_gpu_embedded_detections_equal_cpu_embedded(clips, model_path, tmp_path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed here")
    from .test_bulk import bulk_main
    from .test_triton import assert_same_detections

    src = tmp_path / "v"
    src.mkdir()
    (src / "sd.mp4").write_bytes(clips["360p"].read_bytes())
    bulk_main(src, tmp_path / "cpu", model_path, "--device", "cpu")
    rc, summary = bulk_main(src, tmp_path / "gpu", model_path, "--device", "gpu")
    assert rc == 0 and summary["options"]["device"] == "gpu"
    assert_same_detections(tmp_path / "cpu", tmp_path / "gpu")


class RecordingServer:
    """Stands in for Triton's registry where no server runs (the lent GPU machine has none):
    records what the ring registers, so the test can see every region come and go."""

    def __init__(self) -> None:
        self.registered: dict[str, int] = {}

    def register_cuda_shared_memory(self, name, raw_handle, device_id, byte_size) -> None:
        assert raw_handle and device_id == 0
        self.registered[name] = byte_size

    def unregister_cuda_shared_memory(self, name) -> None:
        del self.registered[name]


def test_cuda_shm_ring_writes_through_its_views_and_releases_every_region() -> None:
    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory", reason="needs tritonclient")
    import cupy as cp

    from client.infer.shm import CudaShmRing

    server = RecordingServer()
    ring = CudaShmRing(server, lanes=3, byte_size=2 * 64 * 96 * 3)
    assert len(server.registered) == 3 and len(cudashm.allocated_shared_memory_regions()) == 3
    batch = cp.arange(2 * 64 * 96 * 3, dtype=cp.uint32).astype(cp.uint8).reshape(2, 64, 96, 3)
    name, nbytes = ring.write(1, batch)
    assert name.endswith("_1") and nbytes == batch.size
    got = cudashm.get_contents_as_numpy(ring.handles[1][1], np.uint8, [nbytes])
    np.testing.assert_array_equal(got, cp.asnumpy(batch).reshape(-1))
    view = ring.view(2, batch.shape)  # the pipeline's way: frames written in place, no copy
    assert view.data.ptr == ring.views[2].data.ptr
    view[...] = batch[::-1]
    name, nbytes = ring.write(2, view)
    got = cudashm.get_contents_as_numpy(ring.handles[2][1], np.uint8, [nbytes])
    np.testing.assert_array_equal(got, cp.asnumpy(batch[::-1]).reshape(-1))
    ring.close()
    assert server.registered == {} and cudashm.allocated_shared_memory_regions() == []


def test_a_file_nvdec_does_not_take_is_decoded_by_pyav_and_uploaded_into_its_slot(tmp_path) -> None:
    import cupy as cp

    from client.decode.nvdec_source import NvdecSource, NvdecUnsupported
    from client.discovery import discover
    from client.gpu.letterbox import GpuLetterbox
    from client.jobs import make_job
    from client.pipeline import PipelineConfig
    from client.schedule import plan

    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "lossless.mkv", frames=4, size_wh=(160, 96), codec="ffv1")
    with pytest.raises(NvdecUnsupported, match="ffv1"):
        NvdecSource(src / "lossless.mkv", sampling=Sampling(), letterbox=GpuLetterbox())
    (p,) = plan(discover(src).videos, Sampling(), workers=1, split=False)
    job = make_job(p, None, PipelineConfig(gpu=True), None, GpuLetterbox())
    with job.open_source() as source:
        frames = list(source.frames(PLAN))
    cpu = pyav(src / "lossless.mkv")
    assert [f.index for f in frames] == [f.index for f in cpu]
    batch = cp.zeros((len(frames), *frames[0].plan.dst_hw, 3), cp.uint8)
    for slot, f in enumerate(frames):
        f.picture.write_into(batch[slot])
    np.testing.assert_array_equal(cp.asnumpy(batch), np.stack([f.image for f in cpu]))


def test_nvdec_frames_are_letterboxed_straight_into_their_batch_slots(clips) -> None:
    """What the pipeline does on the GPU path: each kernel writes into a slot of one buffer
    (a view of a CUDA shared-memory region, say); the batch equals the frames made alone."""
    import cupy as cp

    frames = nvdec(clips["1080p_bframes"], Sampling(every=6))
    flat = cp.full(len(frames) * int(np.prod(frames[0].plan.dst_hw)) * 3 + 64, 7, cp.uint8)
    batch = flat[: flat.size - 64].reshape(len(frames), *frames[0].plan.dst_hw, 3)
    for slot, f in enumerate(frames):
        f.picture.write_into(batch[slot])
    cp.cuda.get_current_stream().synchronize()
    np.testing.assert_array_equal(cp.asnumpy(batch), np.stack([cp.asnumpy(f.image) for f in frames]))
    assert (cp.asnumpy(flat[-64:]) == 7).all()  # nothing written past the batch


def test_gpu_frames_reach_host_slots_and_pinned_staging_unchanged(clips) -> None:
    """The two host destinations of GPU frames: a system shared-memory slot (one download per
    frame) and the pinned staging buffer a GPU batch is copied into when there is no shm."""
    import cupy as cp

    from client.arrays import copy_into
    from client.infer.buffers import LaneBuffers, device, pinned

    frames = nvdec(clips["360p"], Sampling(every=10))
    shape = (len(frames), *frames[0].plan.dst_hw, 3)
    host_batch = np.zeros(shape, np.uint8)
    device_batch = LaneBuffers(1, device).view(0, shape)
    for slot, f in enumerate(frames):
        f.picture.write_into(host_batch[slot])
        f.picture.write_into(device_batch[slot])
    staging = LaneBuffers(1, pinned).view(0, shape)
    copy_into(staging, device_batch)
    expected = np.stack([cp.asnumpy(f.image) for f in frames])
    np.testing.assert_array_equal(host_batch, expected)
    np.testing.assert_array_equal(staging, expected)


def test_four_decoder_threads_give_the_frames_pyav_gives(clips) -> None:
    """NVDEC from four threads at once, letterboxed on the decoding thread, frame by frame
    against PyAV. gpu_check.sh runs it also under CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1, where
    no legacy default stream orders the decoder's writes before the copies (issue 19, 1)."""
    import threading

    import cupy as cp

    names = ["1080p_bframes", "360p", "odd", "rotated"]
    got: dict[str, list] = {}
    failures: list[BaseException] = []

    def decode(name: str) -> None:
        try:
            from client.decode.nvdec_source import NvdecSource
            from client.gpu.letterbox import GpuLetterbox

            with NvdecSource(clips[name], sampling=Sampling(), letterbox=GpuLetterbox()) as src:
                got[name] = [(f.index, cp.asnumpy(f.image)) for f in src.frames(PLAN)]
        except BaseException as e:  # re-raised on the test's thread
            failures.append(e)

    threads = [threading.Thread(target=decode, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    from client.decode.pyav_source import opencv

    for name in names:
        cpu, alone = pyav(clips[name]), nvdec(clips[name])
        assert [i for i, _ in got[name]] == [f.index for f in cpu] == [f.index for f in alone], name
        threaded = np.stack([img for _, img in got[name]])
        # The same kernel on the same surfaces: a frame read before the decoder finished differs.
        assert (threaded == np.stack([cp.asnumpy(f.image) for f in alone])).all(), f"{name}: differs from one thread"
        if opencv() is not None:  # the CPU path is exact only with OpenCV
            diff = np.abs(threaded.astype(int) - np.stack([f.image for f in cpu]))
            assert (diff <= 2).mean() >= 0.999, f"{name}: {(diff <= 2).mean():.5f} of pixels within 2 levels"


def test_the_embedded_gpu_sessions_run_on_cuda_not_a_cpu_fallback(model_path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed here")
    from client.infer.embedded_gpu import open_cuda_session

    assert open_cuda_session(ort, model_path, 0).get_providers()[0] == "CUDAExecutionProvider"
