"""Letterbox geometry as ultralytics computes it, and boxes mapped back to source pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.letterbox import (
    LetterboxPlan, boxes_to_model, boxes_to_source, grey_canvas, letterbox_reference, pad_into, plan_letterbox,
    source_taps,
)


@pytest.mark.parametrize(
    ("src_hw", "model_hw", "minimal", "expected"),
    [
        ((720, 1280), (640, 640), True, LetterboxPlan((720, 1280), (384, 640), (360, 640), 12, 0)),
        ((720, 1280), (640, 640), False, LetterboxPlan((720, 1280), (640, 640), (360, 640), 140, 0)),
        ((640, 360), (640, 640), True, LetterboxPlan((640, 360), (640, 384), (640, 360), 0, 12)),
        ((362, 642), (320, 320), True, LetterboxPlan((362, 642), (192, 320), (180, 320), 6, 0)),
        ((1080, 1920), (640, 640), True, LetterboxPlan((1080, 1920), (384, 640), (360, 640), 12, 0)),
        ((1, 2000), (640, 640), True, LetterboxPlan((1, 2000), (32, 640), (1, 640), 15, 0)),
        ((480, 640), (640, 640), True, LetterboxPlan((480, 640), (480, 640), (480, 640), 0, 0)),
        ((96, 160), (384, 640), False, LetterboxPlan((96, 160), (384, 640), (384, 640), 0, 0)),
    ],
)
def test_plan_matches_ultralytics(src_hw, model_hw, minimal, expected) -> None:
    assert plan_letterbox(src_hw, model_hw, minimal=minimal) == expected


@pytest.mark.parametrize("src_hw", [(0, 10), (10, 0), (-1, 5)])
def test_plan_rejects_empty_frames(src_hw) -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_letterbox(src_hw, (640, 640), minimal=True)


@given(
    h=st.integers(1, 2200), w=st.integers(1, 2200), minimal=st.booleans(),
    box=st.tuples(*[st.floats(0, 1) for _ in range(4)]),
)
def test_boxes_inside_the_frame_round_trip_exactly_through_the_letterbox(h, w, minimal, box) -> None:
    plan = plan_letterbox((h, w), (640, 640), minimal=minimal)
    x1, x2 = sorted([box[0] * w, box[2] * w])
    y1, y2 = sorted([box[1] * h, box[3] * h])
    src = np.array([[x1, y1, x2, y2]])
    back = boxes_to_source(boxes_to_model(src, plan), plan)
    np.testing.assert_allclose(back, src, atol=1e-3 * max(h, w) / 640 + 1e-4)


def test_boxes_outside_the_frame_are_clipped_to_it() -> None:
    plan = plan_letterbox((720, 1280), (640, 640), minimal=True)
    out = boxes_to_source(np.array([[-5.0, 0.0, 700.0, 400.0]]), plan)  # pad area and beyond
    assert out.tolist() == [[0.0, 0.0, 1280.0, 720.0]]


def test_pad_is_grey_114_and_the_image_sits_at_top_left_offsets() -> None:
    plan = plan_letterbox((720, 1280), (640, 640), minimal=False)
    img = pad_into(np.full((360, 640, 3), 7, np.uint8), plan)
    assert img.shape == (640, 640, 3)
    assert (img[:140] == 114).all() and (img[500:] == 114).all() and (img[140:500] == 7).all()


def test_reference_letterbox_resizes_bilinearly_with_half_pixel_centres() -> None:
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[:, 2:] = 200
    plan = plan_letterbox((2, 4), (4, 8), minimal=False)
    out = letterbox_reference(rgb, plan)
    assert plan.resized_hw == (4, 8) and out.shape == (4, 8, 3)
    assert out[0, :, 0].tolist() == [0, 0, 0, 50, 150, 200, 200, 200]


@pytest.mark.parametrize(
    ("src_hw", "resized_hw", "rows", "cols"),
    [
        ((1080, 1920), (360, 640), [1, 4, 7], [1, 4, 7]),  # 3:1, every weight 1: the middle pixel of each 3
        ((2160, 3840), (360, 640), [2, 3, 8, 9], [2, 3, 8, 9]),  # 6:1, weights 1/2: two pixels of each 6
        ((1440, 2560), (360, 640), [1, 2, 5, 6], [1, 2, 5, 6]),  # 4:1, weights 1/2
        ((1080, 1440), (480, 640), None, None),  # 2.25:1: every source pixel has a weight
        ((720, 1280), (360, 640), None, None),  # 2:1 reads every pixel already
        ((1, 2000), (1, 640), None, None),  # 2000/640 = 3.125: fractional weights
        ((360, 640), (360, 640), None, None),
    ],
)
def test_source_taps_are_the_only_pixels_the_resize_reads(src_hw, resized_hw, rows, cols) -> None:
    taps = source_taps(src_hw, resized_hw)
    if rows is None:
        assert taps is None
        return
    assert taps.rows[: len(rows)].tolist() == rows and taps.cols[: len(cols)].tolist() == cols
    assert taps.shape in {(resized_hw[0], resized_hw[1]), (2 * resized_hw[0], 2 * resized_hw[1])}


@settings(max_examples=60, deadline=None)
@given(scale=st.sampled_from([3, 4, 5, 6, 8]), out_h=st.integers(1, 24), out_w=st.integers(1, 24),
       extra_w=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1))
def test_resizing_only_the_source_taps_is_the_reference_letterbox_exactly(scale, out_h, out_w, extra_w, seed) -> None:
    """The CPU path converts only the taps to RGB and resizes those: under the reference's own
    formula that is the same image to the bit, whatever the axis (one axis may be read whole)."""
    h, w = out_h * scale, out_w * scale + extra_w  # extra_w: a width whose weights are fractional
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    plan = LetterboxPlan((h, w), (out_h, out_w), (out_h, out_w), 0, 0)
    taps = source_taps((h, w), (out_h, out_w))
    if taps is None:
        return
    sub = rgb if taps.rows is None else rgb[taps.rows]
    sub = sub if taps.cols is None else sub[:, taps.cols]
    assert sub.shape[0] < h or sub.shape[1] < w
    np.testing.assert_array_equal(letterbox_reference(sub, replace(plan, src_hw=sub.shape[:2])),
                                  letterbox_reference(rgb, plan))


def test_grey_canvas_leaves_the_picture_s_place_for_the_resize_to_write_into() -> None:
    plan = plan_letterbox((720, 1280), (640, 640), minimal=True)
    canvas, region = grey_canvas(plan)
    region[...] = 7
    assert np.shares_memory(canvas, region) and region.shape == (360, 640, 3)
    assert (canvas[:12] == 114).all() and (canvas[372:] == 114).all() and (canvas[12:372] == 7).all()
