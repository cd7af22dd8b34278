"""The built model honours the serving contract for every batch and frame size in use."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from client.contract import COCO_NAMES, DETECTIONS, INPUT, NMS, NUM_DETECTIONS, ModelInfo


def structured_frames(batch: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Blocky colour frames: content the untrained model answers with tens of boxes."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (batch, h // 32 + 1, w // 32 + 1, 3))
    return np.kron(blocks, np.ones((1, 32, 32, 1)))[:, :h, :w].astype(INPUT.numpy_dtype)


def test_model_declares_contract_names_dtypes_and_dims(session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type) == (INPUT.name, "tensor(uint8)")
    assert len(inp.shape) == 4 and inp.shape[3] == INPUT.dims[-1]
    assert all(isinstance(d, str) for d in inp.shape[:3]), "batch, H and W must be dynamic"
    outs = {o.name: o for o in session.get_outputs()}
    assert set(outs) == {DETECTIONS.name, NUM_DETECTIONS.name}
    assert outs[DETECTIONS.name].type == "tensor(float)"
    assert outs[DETECTIONS.name].shape[1:] == list(DETECTIONS.dims)
    assert outs[NUM_DETECTIONS.name].type == "tensor(int32)"
    assert outs[NUM_DETECTIONS.name].shape[1:] == list(NUM_DETECTIONS.dims)


def test_model_metadata_names_coco_classes_and_nms_settings(session: ort.InferenceSession) -> None:
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, input_shape=(None,))
    assert info.names == dict(enumerate(COCO_NAMES)) and len(COCO_NAMES) == 80
    assert info.nms == NMS and info.dynamic_hw and info.imgsz == (320, 320)
    assert "UNTRAINED" in info.source


@pytest.mark.parametrize(
    ("batch", "h", "w"),
    [(1, 384, 640), (3, 640, 384), (2, 640, 640), (4, 320, 320), (32, 160, 160), (5, 96, 224)],
)
def test_outputs_have_contract_shapes_zero_padding_and_boxes_inside_the_frame(
    session: ort.InferenceSession, batch: int, h: int, w: int
) -> None:
    det, num = session.run(None, {INPUT.name: structured_frames(batch, h, w)})
    assert det.shape == (batch, *DETECTIONS.dims) and det.dtype == DETECTIONS.numpy_dtype
    assert num.shape == (batch, *NUM_DETECTIONS.dims) and num.dtype == NUM_DETECTIONS.numpy_dtype
    assert num.sum() > 0, "structured frames must give detections, or the checks below are vacuous"
    for b in range(batch):
        n = int(num[b, 0])
        kept, rest = det[b, :n], det[b, n:]
        assert not rest.any(), "rows past num_detections must be zero"
        assert (kept[:, 4] > NMS.conf_thres).all()
        assert (np.diff(kept[:, 4]) <= 0).all(), "detections come best first"
        assert (kept[:, [0, 2]] >= 0).all() and (kept[:, [0, 2]] <= w).all()
        assert (kept[:, [1, 3]] >= 0).all() and (kept[:, [1, 3]] <= h).all()
        assert (kept[:, 2] >= kept[:, 0]).all() and (kept[:, 3] >= kept[:, 1]).all()
        assert np.array_equal(kept[:, 5], np.round(kept[:, 5])) and (kept[:, 5] < 80).all()


def test_each_image_in_a_batch_gets_the_same_detections_as_alone(session: ort.InferenceSession) -> None:
    frames = structured_frames(4, 384, 640, seed=3)
    det, num = session.run(None, {INPUT.name: frames})
    for b in range(4):
        d1, n1 = session.run(None, {INPUT.name: frames[b : b + 1]})
        assert n1[0, 0] == num[b, 0]
        np.testing.assert_allclose(d1[0], det[b], atol=1e-3)


def test_config_parameters_carry_the_metadata_and_digest_and_read_back_equal() -> None:
    from dataclasses import replace

    info = ModelInfo(imgsz=(384, 640), dynamic_hw=False, max_batch=None, names={0: "a", 1: "b"}, source="s",
                     digest="ab" * 32)
    params = info.to_config_parameters()
    assert all(k.startswith("framestream_") for k in params) and params["framestream_digest"] == "ab" * 32
    assert ModelInfo.from_config_parameters(params, max_batch=16) == replace(info, max_batch=16)
    for missing in ("framestream_digest", "framestream_imgsz", "framestream_contract"):
        with pytest.raises(KeyError):
            ModelInfo.from_config_parameters({k: v for k, v in params.items() if k != missing}, max_batch=16)
    with pytest.raises(ValueError, match="contract version"):
        ModelInfo.from_config_parameters({**params, "framestream_contract": "0"}, max_batch=16)


def test_the_embedded_backend_names_its_model_by_the_sha256_of_the_file(model_path) -> None:
    import hashlib

    from client.infer.embedded import EmbeddedBackend

    backend = EmbeddedBackend(model_path, sessions=1)
    assert backend.model.digest == hashlib.sha256(model_path.read_bytes()).hexdigest()
