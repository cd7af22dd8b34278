"""``wrap`` puts users' exports of every supported layout inside the contract."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from client.contract import DETECTIONS, INPUT, NUM_DETECTIONS, ModelInfo
from client.errors import ModelError
from server_config.model.contract_graph import HeadLayout
from server_config.model.reference import reference_detections
from server_config.model.wrap import detect_layout, wrap_model

from .synthetic_exports import make_export
from .test_contract import structured_frames


def run(model, frames: np.ndarray):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, sess.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: frames})


def run_export(export, frames: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(export.SerializeToString(), providers=["CPUExecutionProvider"])
    chw = frames.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return sess.run(None, {"images": chw})[0]


@pytest.mark.parametrize("layout", [HeadLayout.ULTRALYTICS, HeadLayout.YOLOV5])
@pytest.mark.parametrize(("batch", "hw", "opset"), [(None, None, 17), (1, (320, 320), 12), (None, (256, 384), 19)])
def test_wrapped_raw_export_gives_the_reference_detections_of_its_raw_output(layout, batch, hw, opset) -> None:
    names = {0: "cat", 1: "dog", 2: "bird"}
    export = make_export(layout, nc=3, batch=batch, hw=hw, names=names, opset=opset)
    wrapped = wrap_model(export, source="test")
    h, w = hw or (224, 352)
    frames = structured_frames(batch or 3, h, w, seed=5)
    sess, (det, num) = run(wrapped, frames)
    raw = run_export(export, frames)
    assert num.sum() > 0
    for b in range(len(frames)):
        expected = reference_detections(raw[b], layout, (h, w))
        assert num[b, 0] == len(expected)
        np.testing.assert_allclose(det[b, : len(expected)], expected, rtol=1e-5, atol=1e-3)
    info = ModelInfo.from_metadata(sess.get_modelmeta().custom_metadata_map, input_shape=tuple(sess.get_inputs()[0].shape))
    assert info.names == names and info.max_batch == batch and info.dynamic_hw == (hw is None)
    if hw:
        assert info.imgsz == hw


def test_wrapped_end_to_end_export_keeps_its_detections_and_counts_them() -> None:
    export = make_export(HeadLayout.END_TO_END, names={0: "a", 1: "b", 2: "c"}, max_det=100)
    frames = structured_frames(2, 160, 224, seed=2)
    _, (det, num) = run(wrap_model(export, source="test"), frames)
    raw = run_export(export, frames)
    for b in range(2):
        valid = raw[b][raw[b][:, 4] > 0]
        assert num[b, 0] == len(valid) > 0
        assert det.shape[1] == DETECTIONS.dims[0]
        kept = det[b][det[b][:, 4] > 0]
        expected = valid.copy()
        expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, 224)
        expected[:, [1, 3]] = expected[:, [1, 3]].clip(0, 160)
        np.testing.assert_allclose(kept, expected, atol=1e-4)


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        ([None, 84, 8400], (HeadLayout.ULTRALYTICS, 80)),
        ([1, 84, None], (HeadLayout.ULTRALYTICS, 80)),
        ([None, None, 85], (HeadLayout.YOLOV5, 80)),
        ([1, 25200, 6], (HeadLayout.YOLOV5, 1)),
        ([None, 6, 8400], (HeadLayout.ULTRALYTICS, 2)),
        ([None, 300, 6], (HeadLayout.END_TO_END, 0)),
        ([None, 3, 3], ModelError),
        ([None, 1000], ModelError),
    ],
)
def test_layout_is_told_from_the_output_shape(dims, expected) -> None:
    if expected is ModelError:
        with pytest.raises(ModelError):
            detect_layout(dims)
    else:
        assert detect_layout(dims) == expected
