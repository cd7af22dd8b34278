"""Letterbox geometry as ultralytics computes it, and boxes mapped back to source pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.letterbox import (
    LetterboxPlan, boxes_to_model, boxes_to_source, letterbox_reference, pad_into, plan_letterbox,
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
