"""The CUDA letterbox kernel's own source, compiled for the CPU, against the NumPy reference.

Where a GPU is present ``tests/test_gpu.py`` runs the kernel itself; these tests hold its
arithmetic to the spec on every machine (see ``tests/kernel_on_cpu.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client.colour import nv12_to_rgb_reference, select_colour, yuv420p_to_nv12
from client.letterbox import letterbox_reference, plan_letterbox

from . import kernel_on_cpu
from .videos import frame_image

pytestmark = pytest.mark.skipif(kernel_on_cpu.compiler() is None, reason="needs g++ to compile the kernel source")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):
    return kernel_on_cpu.build(tmp_path_factory.mktemp("kernel"))


def nv12_of(w: int, h: int, seed: int, surface_h: int | None = None) -> np.ndarray:
    """An NV12 surface with structured content (blocks and noise); rows past ``h`` are padding
    with junk, as NVDEC's surfaces have (1088 rows for 1080p)."""
    rng = np.random.default_rng(seed)
    y = np.clip(frame_image(seed, w, h)[..., 1].astype(int) + rng.integers(-20, 20, (h, w)), 0, 255).astype(np.uint8)
    u = rng.integers(16, 240, (h // 2, w // 2), dtype=np.uint8)
    v = np.ascontiguousarray(u[::-1, ::-1])
    surface_h = surface_h or h
    luma = np.vstack([y, np.full((surface_h - h, w), 99, np.uint8)])
    uv = yuv420p_to_nv12(y, u, v)[h:]
    chroma = np.vstack([uv, np.full(((surface_h - h) // 2, w), 77, np.uint8)])
    return np.vstack([luma, chroma])


def reference(nv12: np.ndarray, w: int, h: int, colour, plan, turns: int) -> np.ndarray:
    return letterbox_reference(np.rot90(nv12_to_rgb_reference(nv12, w, h, colour), turns), plan)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize(("w", "h", "surface_h"), [(320, 180, 192), (200, 120, None), (64, 48, None)])
@pytest.mark.parametrize("colour", [(None, None), (1, 1), (5, 2)])
def test_kernel_is_the_reference_for_every_rotation_size_and_colour(kernel, turns, w, h, surface_h, colour) -> None:
    nv12 = nv12_of(w, h, seed=w + turns, surface_h=surface_h)
    display_hw = (w, h) if turns % 2 else (h, w)
    plan = plan_letterbox(display_hw, (160, 160), minimal=True)
    conversion = select_colour(*colour)
    out = np.zeros((*plan.dst_hw, 3), np.uint8)
    got = kernel_on_cpu.letterbox(kernel, nv12, plan, conversion, out, turns)
    diff = np.abs(got.astype(int) - reference(nv12, w, h, conversion, plan, turns).astype(int))
    assert (diff <= 1).mean() >= 0.999 and diff.max() <= 2, f"{(diff <= 1).mean():.5f} within 1, max {diff.max()}"


def test_kernel_writes_its_slot_only_and_pads_with_grey(kernel) -> None:
    w, h = 192, 108
    nv12 = nv12_of(w, h, seed=3)
    plan = plan_letterbox((h, w), (128, 128), minimal=False)  # a square: pad above and below
    assert plan.top > 0
    batch = np.full((3, *plan.dst_hw, 3), 7, np.uint8)
    kernel_on_cpu.letterbox(kernel, nv12, plan, select_colour(None, None), batch[1])
    assert (batch[0] == 7).all() and (batch[2] == 7).all()
    assert (batch[1, : plan.top] == 114).all() and (batch[1, plan.top + plan.resized_hw[0] :] == 114).all()
    expected = reference(nv12, w, h, select_colour(None, None), plan, 0)
    assert np.abs(batch[1].astype(int) - expected.astype(int)).max() <= 2


def test_kernel_on_a_real_decoded_frame(kernel, tmp_path: Path) -> None:
    import av

    from client.decode.pyav_source import yuv_planes

    from .videos import write_video

    path = write_video(tmp_path / "c.mp4", frames=1, size_wh=(640, 360), colour=(1, 1))
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        nv12 = yuv420p_to_nv12(*yuv_planes(frame))
    plan = plan_letterbox((360, 640), (320, 320), minimal=True)
    conversion = select_colour(1, 1)
    got = kernel_on_cpu.letterbox(kernel, nv12, plan, conversion, np.zeros((*plan.dst_hw, 3), np.uint8))
    diff = np.abs(got.astype(int) - reference(nv12, 640, 360, conversion, plan, 0).astype(int))
    assert (diff <= 1).mean() >= 0.999 and diff.max() <= 2


def odd_nv12(w: int, h: int, seed: int, chroma_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An NV12 surface of odd height ``h`` holding ``chroma_rows`` chroma rows (ceil(h/2) as a
    decoder writes them, or floor(h/2) as a view sized floor(1.5 h) shows them), with the
    planar Y, U, V (ceil(h/2) chroma rows) it came from."""
    rng = np.random.default_rng(seed)
    y = np.clip(frame_image(seed, w, h)[..., 1].astype(int) + rng.integers(-20, 20, (h, w)), 0, 255).astype(np.uint8)
    u = rng.integers(16, 240, ((h + 1) // 2, w // 2), dtype=np.uint8)
    v = rng.integers(16, 240, ((h + 1) // 2, w // 2), dtype=np.uint8)
    uv = np.stack([u, v], axis=-1).reshape(len(u), w)[:chroma_rows]
    return np.vstack([y, uv]), y, u, v


@pytest.mark.parametrize("turns", [0, 1])
@pytest.mark.parametrize("h", [181, 121, 7])
@pytest.mark.parametrize("layout", ["ceil", "floor"])
def test_odd_frame_heights_split_the_planes_where_the_decoder_put_them(kernel, turns, h, layout) -> None:
    from client.colour import yuv420_to_rgb_reference
    from client.gpu.letterbox import nv12_planes

    w = 64
    chroma_rows = (h + 1) // 2 if layout == "ceil" else h // 2
    nv12, y, u, v = odd_nv12(w, h, seed=h + turns, chroma_rows=chroma_rows)
    luma, chroma = nv12_planes(nv12)
    assert luma.shape[0] == h and chroma.shape[0] == chroma_rows  # was h - 1 for the floor layout
    if layout == "floor":  # the last luma row's chroma row is not in the view: the kernel reuses the one above
        u, v = np.vstack([u[:-1], u[-2:-1]]), np.vstack([v[:-1], v[-2:-1]])
    display_hw = (w, h) if turns % 2 else (h, w)
    plan = plan_letterbox(display_hw, (96, 96), minimal=False)
    colour = select_colour(1, 1)
    got = kernel_on_cpu.letterbox(kernel, nv12, plan, colour, np.zeros((*plan.dst_hw, 3), np.uint8), turns)
    expected = letterbox_reference(np.rot90(yuv420_to_rgb_reference(y, u, v, colour), turns), plan)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert (diff <= 1).mean() >= 0.999 and diff.max() <= 2, f"{(diff <= 1).mean():.5f} within 1, max {diff.max()}"
