"""PyAV decoding: numbering, timestamps, sampling, rotation, and the letterbox it produces."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from client.decode import Sampling
from client.decode.pyav_source import PyAVSource
from client.decode.sampling import select
from client.errors import DecodeError
from client.letterbox import letterbox_reference, plan_letterbox

from .videos import frame_image, write_video

PLAN_320 = lambda hw: plan_letterbox(hw, (320, 320), minimal=True)  # noqa: E731


def decode(path: Path, sampling: Sampling = Sampling()):
    with PyAVSource(path, sampling=sampling) as src:
        return list(src.frames(PLAN_320))


@pytest.mark.parametrize(
    ("sampling", "times", "expected"),
    [
        (Sampling(), [0, 0.1, 0.2], [0, 1, 2]),
        (Sampling(every=3), [i / 10 for i in range(10)], [0, 3, 6, 9]),
        (Sampling(fps=2), [i / 12 for i in range(24)], [0, 6, 12, 18]),
        (Sampling(fps=2), [0.0, 0.05, 0.5, 0.52, 1.2], [0, 2, 4]),  # nearest; 1.5 is past the end
        (Sampling(fps=100), [0.0, 0.1, 0.2], [0, 1, 2]),  # a frame near many grid points appears once
        (Sampling(fps=2), [0.0, 0.25, 0.75], [0, 1]),  # 0.5 is a tie: the earlier frame
        (Sampling(fps=1), [0.3, 0.9, 2.6], [0, 1, 2]),  # grid from 0; the first frame serves t=0
    ],
)
def test_sampling_selects_expected_frames(sampling, times, expected) -> None:
    frames = [(i, t, None) for i, t in enumerate(times)]
    assert [i for i, _, _ in select(frames, sampling)] == expected


def test_every_frame_is_decoded_once_in_presentation_order_with_bframes(tmp_path: Path) -> None:
    path = write_video(tmp_path / "b.mp4", frames=30, gop=12, bframes=2)
    frames = decode(path)
    assert [f.index for f in frames] == list(range(30))
    np.testing.assert_allclose([f.t for f in frames], np.arange(30) / 12, atol=1e-6)


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (Sampling(every=5), list(range(0, 30, 5))),
        (Sampling(fps=3), list(range(0, 30, 4))),
        (Sampling(keyframes=True), [0, 12, 24]),
    ],
)
def test_sampling_modes_on_a_real_file(tmp_path: Path, sampling: Sampling, expected: list[int]) -> None:
    path = write_video(tmp_path / "s.mp4", frames=30, gop=12, bframes=2)
    assert [f.index for f in decode(path, sampling)] == expected


def test_variable_frame_rate_keeps_true_timestamps_and_fps_picks_the_nearest(tmp_path: Path) -> None:
    tb = Fraction(1, 1000)
    pts = [0, 40, 80, 400, 440, 1000, 1010, 1600]
    path = write_video(tmp_path / "vfr.mp4", frames=len(pts), pts=pts, time_base=tb, gop=1)
    frames = decode(path)
    np.testing.assert_allclose([f.t for f in frames], np.array(pts) / 1000, atol=1e-6)
    # grid 0, 0.5, 1.0, 1.5 -> nearest frames 0 (0.0), 4 (0.44), 5 (1.0), 7 (1.6)
    assert [f.index for f in decode(path, Sampling(fps=2))] == [0, 4, 5, 7]


def test_rotation_metadata_gives_the_frame_as_a_viewer_sees_it(tmp_path: Path) -> None:
    path = write_video(tmp_path / "r.mp4", frames=2, size_wh=(160, 96), rotation=90)
    (first, _) = decode(path)
    assert first.plan.src_hw == (160, 96)  # portrait as displayed
    expected = letterbox_reference(np.rot90(frame_image(0, 160, 96)), first.plan)
    diff = np.abs(first.image.astype(int) - expected.astype(int))
    assert np.median(diff) <= 6, "the image must be turned the way the display matrix says"
    assert np.median(np.abs(first.image.astype(int) - letterbox_reference(np.rot90(frame_image(0, 160, 96), -1), first.plan).astype(int))) > 20


def decoded_rgb(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def reference_letterbox(path: Path, plan) -> np.ndarray:
    """The spec applied to the first frame's YUV samples: the reference conversion with the
    stream's declared colour, then the reference letterbox (what the CUDA kernel is held to)."""
    import av

    from client.colour import nv12_to_rgb_reference, stream_colour, yuv420p_to_nv12
    from client.decode.pyav_source import yuv_planes

    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        colour = stream_colour(c.streams.video[0].codec_context)
        nv12 = yuv420p_to_nv12(*yuv_planes(frame))
    return letterbox_reference(nv12_to_rgb_reference(nv12, frame.width, frame.height, colour), plan)


BT709_LIMITED, BT601_FULL = (1, 1), (5, 2)


@pytest.mark.parametrize(
    ("size_wh", "codec", "colour", "pix_fmt"),
    [((1920, 1080), "libx264", None, "yuv420p"), ((1920, 1080), "libx264", BT709_LIMITED, "yuv420p"),
     ((1280, 720), "libx264", BT601_FULL, "yuv420p"), ((1280, 720), "libx264", None, "yuvj420p"),
     ((642, 362), "libx264", None, "yuv420p"), ((360, 640), "libx264", BT709_LIMITED, "yuv420p"),
     ((176, 144), "mpeg4", None, "yuv420p"),
     # 4:1 and 3:1 with an odd height: the converted taps are pairs, and rows alone
     ((2560, 1440), "libx264", BT709_LIMITED, "yuv420p"), ((1920, 1082), "libx264", None, "yuv420p")],
)
def test_cpu_letterbox_is_the_numpy_reference_applied_to_the_decoded_samples(tmp_path: Path, size_wh, codec,
                                                                             colour, pix_fmt) -> None:
    from client.decode.pyav_source import opencv

    if opencv() is None:
        pytest.skip("OpenCV (framestream[exact]) is not installed: the CPU path converts and resizes with swscale")
    suffix = "mp4" if codec == "libx264" else "avi"
    path = write_video(tmp_path / f"v.{suffix}", frames=1, size_wh=size_wh, codec=codec, colour=colour,
                       pix_fmt=pix_fmt)
    (frame,) = decode(path)
    diff = np.abs(frame.image.astype(int) - reference_letterbox(path, frame.plan).astype(int))
    # Both round once per step; OpenCV's fixed-point resize may land one level off.
    assert (diff <= 1).mean() >= 0.998 and diff.max() <= 2, f"{(diff <= 1).mean():.5f} within 1, max {diff.max()}"


def test_odd_sized_frames_are_converted_with_the_stream_colour(tmp_path: Path) -> None:
    from client.decode.pyav_source import opencv

    if opencv() is None:
        pytest.skip("OpenCV (framestream[exact]) is not installed")
    import av

    from client.colour import stream_colour, yuv420_to_rgb_reference
    from client.decode.pyav_source import yuv_planes

    path = write_video(tmp_path / "odd.mkv", frames=1, size_wh=(321, 181), codec="ffv1", colour=BT709_LIMITED)
    (frame,) = decode(path)
    with av.open(str(path)) as c:
        raw = next(c.decode(video=0))
        colour = stream_colour(c.streams.video[0].codec_context)
        planes = yuv_planes(raw)
        rgb = yuv420_to_rgb_reference(*planes, colour)
    assert colour.name == "bt709-limited" and planes[1].shape == (91, 161)
    diff = np.abs(frame.image.astype(int) - letterbox_reference(rgb, frame.plan).astype(int))
    assert (diff <= 1).mean() >= 0.998 and diff.max() <= 2


def test_swscale_fallback_places_the_image_and_pads_like_the_reference(tmp_path: Path, monkeypatch) -> None:
    from client.decode import pyav_source

    monkeypatch.setattr(pyav_source, "opencv", lambda: None)
    path = write_video(tmp_path / "v.mp4", frames=1, size_wh=(642, 362))
    (frame,) = decode(path)
    expected = letterbox_reference(decoded_rgb(path), frame.plan)
    t, l = frame.plan.top, frame.plan.left
    rh, rw = frame.plan.resized_hw
    assert (frame.image[:t] == 114).all() and (frame.image[t + rh :] == 114).all()
    assert (frame.image[:, :l] == 114).all() and (frame.image[:, l + rw :] == 114).all()
    # swscale averages when it shrinks: close to the 2-tap spec on average, not per pixel.
    assert np.mean(np.abs(frame.image.astype(int) - expected.astype(int))) < 8


def test_single_frame_video_decodes_one_frame(tmp_path: Path) -> None:
    assert [f.index for f in decode(write_video(tmp_path / "one.mp4", frames=1))] == [0]


def test_truncated_matroska_is_an_error_after_the_frames_before_the_cut(tmp_path: Path) -> None:
    path = write_video(tmp_path / "t.mkv", frames=48, gop=12)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(DecodeError, match="truncated") as info:
        with PyAVSource(path) as src:
            got.extend(src.frames(PLAN_320))
    assert 0 < len(got) == info.value.frames_decoded < 48
