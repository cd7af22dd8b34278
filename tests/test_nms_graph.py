"""The in-graph post-processing equals the NumPy reference of ultralytics' NMS semantics."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.contract import DETECTIONS, INPUT, NUM_DETECTIONS
from server_config.model.build import contract_io
from server_config.model.contract_graph import HeadLayout, add_postprocess
from server_config.model.graph import FLOAT, GraphBuilder, make_model, value_info
from server_config.model.reference import reference_detections

H, W = 320, 480


def postprocess_session(layout: HeadLayout) -> ort.InferenceSession:
    """Only the contract's post-processing: inputs are frames (for their shape) and a raw head."""
    g = GraphBuilder()
    add_postprocess(g, "raw", layout)
    inputs, outputs = contract_io()
    inputs.append(value_info("raw", FLOAT, ["batch", "a", "b"]))
    model = make_model(g, inputs, outputs, metadata={}, graph_name="post")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


SESSIONS = {layout: postprocess_session(layout) for layout in (HeadLayout.ULTRALYTICS, HeadLayout.YOLOV5)}


def random_head(rng: np.random.Generator, layout: HeadLayout, batch: int, n: int, nc: int) -> np.ndarray:
    """Boxes clustered so that many overlap, scores spread across the threshold."""
    centres = rng.uniform(-20, [W + 20, H + 20], size=(batch, n, 2))
    wh = rng.uniform(2, 160, size=(batch, n, 2))
    probs = rng.uniform(0, 1, size=(batch, n, nc)) ** 3
    if layout is HeadLayout.ULTRALYTICS:
        return np.concatenate([centres, wh, probs], axis=2).transpose(0, 2, 1).astype(np.float32)
    obj = rng.uniform(0, 1, size=(batch, n, 1))
    return np.concatenate([centres, wh, obj, probs], axis=2).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 4),
    n=st.integers(1, 600),
    nc=st.integers(1, 6),
    layout=st.sampled_from([HeadLayout.ULTRALYTICS, HeadLayout.YOLOV5]),
)
def test_graph_nms_keeps_the_same_boxes_scores_and_classes_as_the_reference(
    seed: int, batch: int, n: int, nc: int, layout: HeadLayout
) -> None:
    raw = random_head(np.random.default_rng(seed), layout, batch, n, nc)
    frames = np.zeros((batch, H, W, 3), INPUT.numpy_dtype)
    det, num = SESSIONS[layout].run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: frames, "raw": raw})
    for b in range(batch):
        expected = reference_detections(raw[b], layout, (H, W))
        assert num[b, 0] == len(expected)
        got = det[b, : len(expected)]
        np.testing.assert_allclose(got[:, 4], expected[:, 4], rtol=1e-5)  # best first, as the reference
        np.testing.assert_allclose(tie_order(got), tie_order(expected), rtol=1e-5, atol=1e-3)
        assert not det[b, len(expected) :].any()


def tie_order(rows: np.ndarray) -> np.ndarray:
    """Rows by score, best first, and boxes of exactly equal scores (float32 products tie) in
    one order, since NMS may output tied rows in either: by class, then x1, then y1."""
    return rows[np.lexsort((rows[:, 1], rows[:, 0], rows[:, 5], -rows[:, 4]))]


def test_more_candidates_than_max_det_are_cut_to_max_det_best_first() -> None:
    rng = np.random.default_rng(7)
    n = 2000  # tiny, far-apart boxes: nothing suppresses anything
    xs, ys = np.meshgrid(np.arange(50) * 9.0 + 4, np.arange(40) * 8.0 + 4)
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1)[:n]
    raw = np.concatenate([centres, np.full((n, 2), 2.0), rng.uniform(0.3, 1.0, (n, 1))], axis=1)
    raw = raw.T[None].astype(np.float32)
    frames = np.zeros((1, H, W, 3), INPUT.numpy_dtype)
    det, num = SESSIONS[HeadLayout.ULTRALYTICS].run(None, {INPUT.name: frames, "raw": raw})
    assert num[0, 0] == DETECTIONS.dims[0]
    np.testing.assert_allclose(det[0, :, 4], np.sort(raw[0, 4])[::-1][: DETECTIONS.dims[0]])


@pytest.mark.parametrize("score", [0.25, 0.2500001])
def test_confidence_threshold_is_strictly_greater_as_in_ultralytics(score: float) -> None:
    raw = np.array([[[100.0], [100.0], [20.0], [20.0], [score]]], dtype=np.float32)
    frames = np.zeros((1, H, W, 3), INPUT.numpy_dtype)
    _, num = SESSIONS[HeadLayout.ULTRALYTICS].run(None, {INPUT.name: frames, "raw": raw})
    assert num[0, 0] == len(reference_detections(raw[0], HeadLayout.ULTRALYTICS, (H, W)))
    assert num[0, 0] == (1 if np.float32(score) > np.float32(0.25) else 0)
