"""The GPU path's decisions and geometry, all of which can be checked without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.colour import nv12_to_rgb_reference, select_colour, yuv420p_to_nv12
from client.decode.nvdec_source import nvdec_refusal
from client.gpu import probe, pynvvideocodec_refusal
from client.gpu.letterbox import launch_geometry
from client.infer.shm import region_names

from .videos import write_video


@pytest.mark.parametrize(
    ("colorspace", "color_range", "expected"),
    [(1, 1, "bt709-limited"), (1, 2, "bt709-full"), (5, 1, "bt601-limited"), (6, 2, "bt601-full"),
     (2, 0, "bt601-limited"), (None, None, "bt601-limited")],
)
def test_colour_follows_the_stream_and_swscale_defaults(colorspace, color_range, expected) -> None:
    assert select_colour(colorspace, color_range).name == expected


@pytest.mark.parametrize(
    ("yuv", "colour", "rgb"),
    [
        ((16, 128, 128), (5, 1), (0, 0, 0)),
        ((235, 128, 128), (5, 1), (255, 255, 255)),
        ((255, 128, 128), (5, 2), (255, 255, 255)),
        ((81, 90, 240), (5, 1), (255, 0, 0)),  # BT.601 red
        ((63, 102, 240), (1, 1), (255, 0, 0)),  # BT.709 red
    ],
)
def test_reference_conversion_of_known_colours(yuv, colour, rgb) -> None:
    y, u, v = yuv
    nv12 = np.concatenate([np.full((2, 2), y, np.uint8), np.array([[u, v]], np.uint8)])
    out = nv12_to_rgb_reference(nv12, 2, 2, select_colour(*colour))
    assert np.abs(out.astype(int) - rgb).max() <= 2


def test_reference_conversion_agrees_with_ffmpeg_on_a_real_frame(tmp_path: Path) -> None:
    import av

    path = write_video(tmp_path / "c.mp4", frames=1, size_wh=(320, 192))
    from client.colour import stream_colour
    from client.decode.pyav_source import yuv_planes

    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        nv12 = yuv420p_to_nv12(*yuv_planes(frame))
        ffmpeg = frame.to_ndarray(format="rgb24")
        colour = stream_colour(c.streams.video[0].codec_context)
    ours = nv12_to_rgb_reference(nv12, 320, 192, colour)
    close = np.abs(ours.astype(int) - ffmpeg.astype(int)) <= 2
    assert close.mean() > 0.9  # swscale interpolates chroma; the rest is rounding


@pytest.mark.parametrize(
    ("out_hw", "grid"),
    [((1080, 1920), (60, 135)), ((384, 640), (20, 48)), ((1, 1), (1, 1)), ((33, 31), (1, 5))],
)
def test_launch_geometry_covers_every_output_pixel_once(out_hw, grid) -> None:
    launch = launch_geometry(out_hw)
    assert launch.grid == grid and launch.block == (32, 8)
    assert launch.grid[0] * launch.block[0] >= out_hw[1] > (launch.grid[0] - 1) * launch.block[0]


def test_launch_geometry_rejects_an_empty_output() -> None:
    with pytest.raises(ValueError):
        launch_geometry((0, 640))


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "reason"),
    [
        ("h264", "yuv420p", None),
        ("hevc", None, None),
        ("mjpeg", "yuvj420p", None),
        ("prores", "yuv422p10le", "codec prores"),
        ("hevc", "yuv420p10le", "pixel format"),
        ("h264", "yuv444p", "pixel format"),
    ],
)
def test_files_nvdec_does_not_take_go_to_pyav_with_a_reason(codec, pix_fmt, reason) -> None:
    refusal = nvdec_refusal(codec, pix_fmt)
    assert (refusal is None) if reason is None else (reason in refusal)


def test_shared_memory_ring_has_one_named_region_per_lane() -> None:
    names = region_names("framestream_cuda_42", 3)
    assert names == ["framestream_cuda_42_0", "framestream_cuda_42_1", "framestream_cuda_42_2"]
    assert len(set(names)) == 3


@pytest.mark.parametrize(("version", "refused"), [("1.0.2", True), ("2.0.0", False), ("2.2.4", False),
                                                  ("3.0.0", True), ("unknown", True)])
def test_a_pynvvideocodec_other_than_2_x_is_refused_with_the_pin_to_install(version: str, refused: bool) -> None:
    reason = pynvvideocodec_refusal(version)
    assert (reason is not None) == refused
    if refused:
        assert version in reason and "pip install 'pynvvideocodec>=2.0,<3'" in reason


def gpu_available() -> bool:
    return probe().ok


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU fallback")
def test_without_a_gpu_auto_runs_on_cpu_and_gpu_is_a_usage_error(tmp_path: Path, model_path: Path) -> None:
    assert not probe().ok and probe().reason
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=2)
    run = lambda device: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "client.bulk", str(src), "--out", str(tmp_path / device), "--model", str(model_path),
         "--device", device, "--no-progress"], capture_output=True, text=True, timeout=120)
    auto = run("auto")
    assert auto.returncode == 0 and "device: cpu (" in auto.stderr
    gpu = run("gpu")
    assert gpu.returncode == 1 and len(gpu.stderr.strip().splitlines()) == 1 and "--device gpu:" in gpu.stderr


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_a_session_whose_cuda_provider_fell_back_to_cpu_fails_in_one_line(model_path: Path) -> None:
    import onnxruntime as ort

    from client.errors import UsageError
    from client.infer.buffers import host
    from client.infer.embedded import OrtBackend
    from client.infer.embedded_gpu import open_cuda_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA starts here: the fallback cannot be made to happen")
    # Asked for CUDA then CPU where CUDA cannot start, onnxruntime warns and runs on CPU: the
    # very fallback a CUDA image without cuDNN meets.
    with pytest.raises(UsageError) as caught:
        OrtBackend(model_path, lambda model: open_cuda_session(ort, model, 0), lanes=1, memory=host,
                   runtime="onnxruntime-gpu")
    message = str(caught.value)
    assert "fell back to CPUExecutionProvider" in message and "--device cpu" in message and "\n" not in message
    assert "cannot load it" not in message  # not mistaken for a bad model file


def test_tritonclient_without_cuda_python_is_one_line_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from client.errors import UsageError
    from client.infer.shm import import_cuda_shm

    try:
        import cuda.bindings.runtime  # noqa: F401
        pytest.skip("cuda-python is installed here")
    except ImportError:
        pass
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))  # past CuPy, to tritonclient's own check
    monkeypatch.delitem(sys.modules, "tritonclient.utils.cuda_shared_memory", raising=False)
    with pytest.raises(UsageError) as caught:  # tritonclient raises RuntimeError here, not ImportError
        import_cuda_shm()
    message = str(caught.value)
    assert "cuda-python" in message and "pip install 'framestream[gpu]'" in message and "--shm system" in message
    assert "\n" not in message


def test_a_refused_cuda_registration_says_where_the_reason_is_and_what_to_do() -> None:
    from client.infer.triton import cuda_shm_refusal

    message = cuda_shm_refusal("triton:8001", "failed to register CUDA shared memory region: invalid args\nmore")
    assert message.startswith("Triton at triton:8001 cannot open our CUDA shared memory (failed to register")
    assert "Triton's log says why" in message and "same GPU" in message and "--shm system" in message
    assert "\n" not in message and "more" not in message


def test_the_cuda_ring_uses_tritonclient_s_public_api_only() -> None:
    import re

    source = (Path(__file__).resolve().parent.parent / "client" / "infer" / "shm.py").read_text()
    assert "as_shared_memory_tensor" in source and "from_dlpack" in source
    assert re.findall(r"handle\._\w+", source) == []  # was handle._base_addr, private to tritonclient


# -- default NVDEC sessions: one per decode engine -------------------------------------------------

@pytest.mark.parametrize(("caps", "expected"), [
    (lambda gpu: {"num_decoder_engines": 7, "supported": 1}, 7),  # an H200
    (lambda gpu: {"num_decoder_engines": 2}, 2),
    (lambda gpu: {"num_decoder_engines": 0}, None),  # a GPU without NVDEC says 0: not a count to use
    (lambda gpu: {"supported": 1}, None),  # a build whose caps lack the count
    (lambda gpu: (_ for _ in ()).throw(RuntimeError("CUDA_ERROR_NO_DEVICE")), None),
])
def test_gpu_workers_are_the_decode_engines_the_library_reports_else_the_default(caps, expected) -> None:
    from client import defaults
    from client.gpu.engines import decoder_engines, gpu_workers

    assert decoder_engines(0, caps) == expected
    assert gpu_workers(0, caps) == (expected or defaults.GPU_WORKERS)


def test_the_engine_count_is_asked_for_the_gpu_the_run_uses() -> None:
    from client.gpu.engines import gpu_workers

    asked = []
    assert gpu_workers(3, lambda gpu: asked.append(gpu) or {"num_decoder_engines": 5}) == 5
    assert asked == [3]


# -- sampling before the device copy ---------------------------------------------------------------

def _nvdec_keeping(path: Path, sampling):
    """NvdecSource through the real decoding loop, PyNvVideoCodec's demuxer and decoder stood in
    (packets from PyAV, one frame per packet), counting the frames the driver keeps: on a GPU,
    each kept frame is a device copy of its surface."""
    from types import SimpleNamespace

    import av

    from client.decode.frames import Cut
    from client.decode.nvdec_source import NvdecSource, _NvdecDriver

    with av.open(str(path)) as c:
        packets = [SimpleNamespace(bsl=p.size, pts=p.pts) for p in c.demux(c.streams.video[0]) if p.size]

    class Decoder:
        def Decode(self, packet):  # noqa: N802 - the library's name
            return [SimpleNamespace(getPTS=lambda pts=packet.pts: pts)]

    class Driver(_NvdecDriver):
        def keep(self, frame):
            kept.append(frame.getPTS())
            return frame

        def picture(self, frame, plan):
            return frame

    kept: list[int] = []
    source = NvdecSource(path, sampling=sampling, letterbox=None)
    driver = Driver(packets, Decoder(), source, None)
    plan_for = lambda hw: None  # noqa: E731
    frames = [f.index for f in Cut(source.info, source._clock, sampling, None, None).frames(driver, plan_for)]
    return frames, kept


def test_frames_every_drops_are_never_kept_on_nvdec_and_fps_keeps_what_it_needs(tmp_path: Path) -> None:
    from client.decode import Sampling
    from client.decode.pyav_source import PyAVSource
    from client.letterbox import plan_letterbox

    path = write_video(tmp_path / "v.mp4", frames=24, fps=12)
    for sampling in (Sampling(every=3), Sampling(every=5), Sampling(), Sampling(fps=2.0)):
        frames, kept = _nvdec_keeping(path, sampling)
        with PyAVSource(path, sampling=sampling) as src:
            expected = [f.index for f in src.frames(lambda hw: plan_letterbox(hw, (64, 64), minimal=True))]
        assert frames == expected, sampling
        if sampling.fps is None:
            assert len(kept) == len(expected), f"{sampling}: {len(kept)} device copies for {len(expected)} frames"
    assert _nvdec_keeping(path, Sampling(every=3))[0] == list(range(0, 24, 3))
