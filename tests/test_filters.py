"""``--classes`` and ``--conf`` in the client, and ``build``/``wrap`` ``--conf --iou --max-det`` in the model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from client import bulk
from client.contract import COCO_NAMES, DETECTIONS, INPUT, NUM_DETECTIONS, ModelInfo
from server_config.model.contract_graph import HeadLayout

from .synthetic_exports import make_export
from .test_contract import structured_frames
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]
STOP_SIGN, BOOK = COCO_NAMES.index("stop sign"), COCO_NAMES.index("book")


def model_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "server_config.model", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def bulk_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "client.bulk", "--no-progress", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def metadata(path: Path) -> ModelInfo:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ModelInfo.from_metadata(sess.get_modelmeta().custom_metadata_map,
                                   input_shape=tuple(sess.get_inputs()[0].shape))


@pytest.fixture(scope="module")
def low_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built through the CLI with a low threshold: the untrained weights then find many boxes."""
    path = tmp_path_factory.mktemp("low") / "model.onnx"
    done = model_cli("build", "--imgsz", "320", "--conf", "0.05", "--iou", "0.6", "--max-det", "40", "--out", str(path))
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("clips")
    write_video(src / "a.mp4", frames=5, size_wh=(320, 192))
    return src


def rows_of(out: Path) -> list[list[list[float]]]:
    return [json.loads(line)["detections"] for line in (out / "a.mp4.jsonl").read_text().splitlines()]


def run(src: Path, out: Path, model: Path, *extra: str) -> tuple[int, dict]:
    rc = bulk.main([str(src), "--out", str(out), "--model", str(model), "--no-progress", *extra])
    return rc, json.loads((out / "summary.json").read_text())


def test_build_stores_conf_iou_and_max_det_in_the_metadata_and_the_graph_honours_them(low_model: Path) -> None:
    info = metadata(low_model)
    assert (info.nms.conf_thres, info.nms.iou_thres, info.nms.max_det) == (0.05, 0.6, 40)
    sess = ort.InferenceSession(str(low_model), providers=["CPUExecutionProvider"])
    det, num = sess.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: structured_frames(2, 192, 320, seed=3)})
    assert det.shape[1] == DETECTIONS.dims[0] and num.max() == 40  # capped at --max-det, rows past it zero
    scores = det[:, :, 4][np.arange(DETECTIONS.dims[0])[None] < num]
    assert scores.min() > 0.05 and (scores < 0.25).any()  # under the default threshold: kept by this model


def test_classes_by_name_and_id_and_a_higher_conf_keep_exactly_those_detections_on_every_frame(
        clip: Path, tmp_path: Path, low_model: Path) -> None:
    rc, _ = run(clip, tmp_path / "all", low_model)
    assert rc == 0
    everything = rows_of(tmp_path / "all")
    rc, summary = run(clip, tmp_path / "some", low_model, "--classes", f"Stop_Sign,{BOOK}", "--conf", "0.08")
    assert rc == 0 and summary["options"]["classes"] == [STOP_SIGN, BOOK] and summary["options"]["conf"] == 0.08
    kept = rows_of(tmp_path / "some")
    assert len(kept) == len(everything) == 5  # frames without a kept detection are still recorded
    expected = [[r for r in frame if r[5] in (STOP_SIGN, BOOK) and r[4] > 0.08] for frame in everything]
    assert kept == expected and sum(map(len, kept)) > 0
    assert sum(map(len, kept)) < sum(map(len, everything))


def test_a_rerun_with_other_filters_redoes_and_with_the_same_resumes(
        clip: Path, tmp_path: Path, low_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    assert run(clip, out, low_model, "--classes", "stop sign")[0] == 0
    _, same = run(clip, out, low_model, "--classes", str(STOP_SIGN))  # the same class by id: the same filter
    assert same["files"][0]["resumed"]
    with caplog.at_level(logging.INFO):
        _, other = run(clip, out, low_model, "--classes", "book")
    assert not other["files"][0]["resumed"] and "redoing 1 video: the options changed: classes" in caplog.text
    assert {r[5] for frame in rows_of(out) for r in frame} == {BOOK}
    _, unfiltered = run(clip, out, low_model)
    assert not unfiltered["files"][0]["resumed"] and len({r[5] for f in rows_of(out) for r in f}) > 2
    _, conf = run(clip, out, low_model, "--conf", "0.05")  # the built-in threshold itself filters nothing
    assert conf["files"][0]["resumed"]


@pytest.mark.parametrize(("args", "says"), [
    (["--classes", "person,unicorn"], "error: --classes: no class 'unicorn' in this model; its classes: 0 person, "
                                      "1 bicycle, 2 car,"),
    (["--classes", "80"], "error: --classes: no class id 80 in this model (ids 0-79); its classes: 0 person,"),
    (["--classes", ","], "error: --classes: give class ids or names"),
    (["--conf", "0.01"], "error: --conf 0.01 is below this model's built-in threshold 0.05: detections under it are "
                         "dropped inside the model; rebuild it with 'python -m server_config.model build --conf 0.01 "
                         "--out PATH' (or rewrap your export: 'python -m server_config.model wrap EXPORT --conf 0.01 "
                         "--out PATH') and pass it with --model PATH"),
    (["--conf", "1.5"], "error: --conf must be in [0, 1), got 1.5"),
])
def test_a_bad_filter_is_one_line_exit_1_and_nothing_written(
        clip: Path, tmp_path: Path, low_model: Path, args: list[str], says: str) -> None:
    done = bulk_cli(str(clip), "--out", str(tmp_path / "out"), "--model", str(low_model), *args)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith(says)
    assert not (tmp_path / "out").exists()


def test_following_the_advice_for_a_lower_conf_works(clip: Path, tmp_path: Path, model_path: Path) -> None:
    refused = bulk_cli(str(clip), "--out", str(tmp_path / "out"), "--model", str(model_path), "--conf", "0.1")
    assert refused.returncode == 1 and "build --conf 0.1 --out PATH" in refused.stderr
    lower = tmp_path / "lower.onnx"
    assert model_cli("build", "--imgsz", "320", "--conf", "0.1", "--out", str(lower)).returncode == 0
    done = bulk_cli(str(clip), "--out", str(tmp_path / "out"), "--model", str(lower), "--conf", "0.1")
    assert done.returncode == 0, done.stderr
    scores = [r[4] for frame in rows_of(tmp_path / "out") for r in frame]
    assert scores and min(scores) > 0.1 and min(scores) < 0.25


def test_wrap_applies_conf_and_max_det_to_an_nms_export_and_refuses_iou(tmp_path: Path) -> None:
    export = tmp_path / "e2e.onnx"
    onnx.save(make_export(HeadLayout.END_TO_END, names={0: "a", 1: "b", 2: "c"}, max_det=100), export)
    frames = structured_frames(2, 160, 224, seed=2)
    results = {}
    for name, extra in {"default": [], "strict": ["--conf", "0.7", "--max-det", "6"]}.items():
        out = tmp_path / f"{name}.onnx"
        done = model_cli("wrap", str(export), "--out", str(out), *extra)
        assert done.returncode == 0, done.stderr
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        results[name] = sess.run([DETECTIONS.name, NUM_DETECTIONS.name], {INPUT.name: frames})
    (det, num), (strict_det, strict_num) = results["default"], results["strict"]
    assert metadata(tmp_path / "strict.onnx").nms.max_det == 6 and metadata(tmp_path / "strict.onnx").nms.conf_thres == 0.7
    for b in range(2):
        first_six = det[b, :6]
        expected = first_six[first_six[:, 4] > 0.7]
        assert strict_num[b, 0] == len(expected) < num[b, 0]
        np.testing.assert_array_equal(strict_det[b, : len(expected)], expected)
        assert not strict_det[b, len(expected):].any()  # rows past the count are zero
    refused = model_cli("wrap", str(export), "--out", str(tmp_path / "iou.onnx"), "--iou", "0.5")
    assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0
    assert "--iou cannot change the NMS of an nms=True export" in refused.stderr
    assert not (tmp_path / "iou.onnx").exists()


@pytest.mark.parametrize(("args", "says"), [
    (["--conf", "1"], "--conf must be in [0, 1), got 1"),
    (["--iou", "0"], "--iou must be in (0, 1], got 0"),
    (["--max-det", "301"], "--max-det must be 1-300 (the contract's rows per frame), got 301"),
])
def test_build_refuses_settings_outside_the_contract_in_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    done = model_cli("build", "--imgsz", "320", "--out", str(tmp_path / "m.onnx"), *args)
    assert done.returncode == 1 and done.stderr.strip() == f"error: {says}"
    assert not (tmp_path / "m.onnx").exists()
