"""``python -m server_config.model quantize``: an INT8 QDQ model that serves the contract, gated by its
agreement with the float model on held-out frames."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from client import bulk
from client.contract import DETECTIONS, INPUT, META
from client.infer.embedded import EmbeddedBackend
from server_config.model.agreement import agreement, match_frame
from server_config.model.build import build_model
from server_config.model.calibration import sample_frames
from server_config.model.files import save_onnx_atomically
from server_config.model.quantize import is_qdq

from .synthetic_exports import make_export
from .videos import write_video
from server_config.model.contract_graph import HeadLayout


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server_config.model", *args], capture_output=True, text=True)


@dataclass(frozen=True)
class Quantized:
    float_model: Path
    videos: Path
    out: Path
    f1: float
    stderr: str
    stdout: str


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small frames upscaled into the 320 model: the seeded model finds many boxes on them."""
    src = tmp_path_factory.mktemp("calibrate")
    write_video(src / "a.mp4", frames=20, size_wh=(160, 96))
    write_video(src / "b.mkv", frames=12, size_wh=(96, 160))
    return src


@pytest.fixture(scope="module")
def quantized(model_path: Path, videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    result = cli("quantize", str(model_path), "--calibrate", str(videos), "--frames", "6", "--check-frames", "6",
                 "--min-f1", "0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    f1 = float(re.search(r"F1 ([0-9.]+)", result.stderr).group(1))
    return Quantized(model_path, videos, out, f1, result.stderr, result.stdout)


def test_the_written_model_is_qdq_with_the_float_model_s_metadata_and_says_so_in_its_source(quantized: Quantized) -> None:
    model = onnx.load(str(quantized.out))
    assert is_qdq(model)
    meta = {p.key: p.value for p in model.metadata_props}
    float_meta = {p.key: p.value for p in onnx.load(str(quantized.float_model)).metadata_props}
    assert {k: v for k, v in meta.items() if k != META.SOURCE} == {k: v for k, v in float_meta.items() if k != META.SOURCE}
    assert meta[META.SOURCE].startswith(float_meta[META.SOURCE]) and "INT8" in meta[META.SOURCE]
    assert "held-out frames: F1" in quantized.stderr and "mean IoU" in quantized.stderr


def test_pre_processing_nms_the_first_convolution_the_deepest_stage_and_the_head_s_branches_stay_float(
        quantized: Quantized) -> None:
    graph = onnx.load(str(quantized.out)).graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {t.name for t in graph.initializer}
    assert [n.op_type for n in graph.node if INPUT.name in n.input and n.op_type != "Shape"] == ["Cast"]
    nms = next(n for n in graph.node if n.op_type == "NonMaxSuppression")
    assert all(producer[i].op_type != "DequantizeLinear" for i in nms.input if i in producer)
    float_convs = [n for n in graph.node if n.op_type == "Conv" and n.input[1] in initializers]
    int8_convs = [n for n in graph.node if n.op_type == "Conv" and n.input[1] not in initializers]
    # the first, 3 scales x (box, class) branches of 3 convs, the DFL integral, and the backbone's
    # last stage: the 7 convolutions before the neck's first upsampling (downsampling, C2f, SPPF)
    assert len(float_convs) == 20 + 7 and float_convs[0] is next(n for n in graph.node if n.op_type == "Conv")
    first_resize = next(i for i, n in enumerate(graph.node) if n.op_type == "Resize")
    assert [n for n in graph.node[:first_resize] if n.op_type == "Conv"][-7:] == float_convs[1:8]
    assert all(producer[n.input[1]].op_type == "DequantizeLinear" for n in int8_convs) and len(int8_convs) == 64 - 27


def test_the_quantised_model_serves_the_contract_in_a_bulk_run(quantized: Quantized, tmp_path: Path) -> None:
    backend = EmbeddedBackend(quantized.out)
    try:
        output = backend.infer(0, np.full((2, 192, 320, 3), 114, np.uint8))
        assert output.detections.shape == (2, *DETECTIONS.dims) and output.num_detections.shape == (2, 1)
        assert backend.model.names == EmbeddedBackend(quantized.float_model).model.names
    finally:
        backend.close()
    out = tmp_path / "out"
    rc = bulk.main([str(quantized.videos), "--out", str(out), "--model", str(quantized.out), "--no-progress"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "a.mp4.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(20))
    assert sum(len(r["detections"]) for r in rows) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert "INT8" in summary["model"]["source"]


def test_progress_counts_frames_calibrated_and_checked_in_plain_lines_and_onnxruntime_stays_quiet(
        quantized: Quantized) -> None:
    lines = quantized.stderr.splitlines()
    assert "quantize: calibrating: 6/6 frames" in "\n".join(lines), quantized.stderr
    checked = [l for l in lines if l.startswith("quantize: checking, INT8") and re.search(r": \d+/\d+ frames", l)]
    assert checked and any("ETA" in l for l in lines if l.startswith("quantize: checking")), quantized.stderr
    # not a terminal: one plain line at the start of a step and at each quarter, never one a frame
    assert sum(l.startswith("quantize: calibrating") for l in lines) <= 5
    assert "Collecting tensor data" not in quantized.stdout + quantized.stderr
    assert "\r" not in quantized.stderr and "[W:onnxruntime" not in quantized.stderr
    assert re.search(r"speed kept, measured side by side on \d+ check frames .*: INT8 [0-9.]+ frames/s, "
                     r"float [0-9.]+ frames/s", quantized.stderr), quantized.stderr


def test_a_gate_no_int8_model_can_hold_stops_early_in_one_line_and_writes_nothing(
        quantized: Quantized, tmp_path: Path) -> None:
    out = tmp_path / "refused.onnx"
    result = cli("quantize", str(quantized.float_model), "--calibrate", str(quantized.videos), "--frames", "4",
                 "--check-frames", "24", "--min-f1", "1.0", "--out", str(out))
    assert result.returncode == 2, result.stderr
    error = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(error) == 1 and result.stderr.strip().splitlines()[-1] == error[0], result.stderr
    assert "stopped early" in error[0] and "lower --min-f1, or keep the float model" in error[0], error[0]
    # judged on the early share of the check frames (a quarter, at least 8): the INT8 and the
    # most float models never ran on the others
    assert re.search(r"on 8 of the \d+ check frames is below --min-f1 1:", error[0]), error[0]
    assert "INT8, other frames" not in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_below_the_gate_the_most_sensitive_convolutions_stay_float_until_it_holds(
        quantized: Quantized, tmp_path: Path) -> None:
    assert quantized.f1 < 0.99, "the seeded model's plain INT8 must miss some boxes for the gate to be tested"
    gate = round(quantized.f1 + (1.0 - quantized.f1) / 2, 3)  # between plain INT8's F1 and float's (1)
    out = tmp_path / "mixed.onnx"
    result = cli("quantize", str(quantized.float_model), "--calibrate", str(quantized.videos), "--frames", "6",
                 "--check-frames", "6", "--min-f1", f"{gate}", "--out", str(out))
    assert result.returncode == 0, result.stderr
    f1 = float(re.search(r"held-out frames: F1 ([0-9.]+)", result.stderr).group(1))
    assert f1 >= gate > quantized.f1
    from server_config.model.deliver import KEPT_FLOAT_KEY

    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    kept = json.loads(meta[KEPT_FLOAT_KEY])
    assert kept and f"{len(kept)} of " in meta[META.SOURCE] and "kept float by measured sensitivity" in meta[META.SOURCE]
    assert f"{len(kept)} of" in result.stderr and all(name in result.stderr for name in kept)
    initializers = {t.name for t in model.graph.initializer}
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert all(convs[name].input[1] in initializers for name in kept), "the kept convolutions have float weights"
    plain = onnx.load(str(quantized.out))
    plain_float = {n.name for n in plain.graph.node if n.op_type == "Conv" and n.input[1] in {t.name for t in plain.graph.initializer}}
    assert not set(kept) & plain_float, "kept float beyond the convolutions the plain INT8 model quantised"
    assert is_qdq(model) and len(plain_float) + len(kept) < len(convs), "INT8 work is left"
    assert "speed kept, measured side by side" in result.stderr


def _raw_export(path: Path) -> None:
    onnx.save(make_export(HeadLayout.ULTRALYTICS), path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("min_f1_above_1", "--min-f1 must be between 0 and 1"),
        ("min_f1_below_0", "--min-f1 must be between 0 and 1"),
        ("missing_model", "no such file"),
        ("not_onnx", "not a valid ONNX model"),
        ("raw_export", "not a framestream model"),
        ("already_quantised", "already quantised"),
        ("check_frames_0", "--check-frames must be at least 1, got 0"),
        ("no_videos", "no videos found"),
        ("not_a_directory", "not a directory"),
        ("out_exists", "already exists; pass --force"),
        ("nothing_detected", "finds nothing on the"),
    ],
)
def test_bad_input_gives_one_error_line_exit_1_and_writes_nothing(
    case: str, message: str, quantized: Quantized, tmp_path: Path
) -> None:
    model, videos, extra = quantized.float_model, quantized.videos, []
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.int8.onnx"
    if case == "min_f1_above_1":
        extra = ["--min-f1", "1.01"]
    elif case == "min_f1_below_0":
        extra = ["--min-f1=-0.1"]
    elif case == "check_frames_0":
        extra = ["--check-frames", "0"]
    elif case == "missing_model":
        model = tmp_path / "absent.onnx"
    elif case == "not_onnx":
        model = tmp_path / "model.onnx"
        model.write_text("not a model\n")
    elif case == "raw_export":
        model = tmp_path / "export.onnx"
        _raw_export(model)
    elif case == "already_quantised":
        model = quantized.out
    elif case == "no_videos":
        videos = tmp_path / "empty"
        videos.mkdir()
        (videos / "notes.txt").write_text("no video here\n")
    elif case == "not_a_directory":
        videos = tmp_path / "absent"
    elif case == "out_exists":
        out.write_bytes(b"a user's model")
    elif case == "nothing_detected":  # at 160 the seeded model finds no box on these frames
        model = tmp_path / "m160.onnx"
        save_onnx_atomically(build_model(size="n", imgsz=160), model)
    result = cli("quantize", str(model), "--calibrate", str(videos), "--frames", "4", "--check-frames", "4",
                 "--out", str(out), *extra)
    assert result.returncode == 1
    # one error line, after the progress lines of the steps that had started (nothing_detected)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("quantize: ")]
    assert len(lines) == 1 and message in lines[0] and result.stderr.strip().endswith(lines[0]), result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == (["model.int8.onnx"] if case == "out_exists" else [])
    if case == "out_exists":
        assert out.read_bytes() == b"a user's model"


def test_held_out_frames_are_never_calibration_frames(videos: Path, model_path: Path) -> None:
    from client.infer.embedded import read_model_info
    import onnxruntime as ort

    info = read_model_info(ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]), model_path)
    sets = sample_frames(videos, info, calibration=6, held_out=12)
    assert (len(sets.calibration), len(sets.held_out), sets.videos) == (6, 12, 2)
    calibration = {f.tobytes() for f in sets.calibration}
    assert len(calibration) == 6 and not calibration & {f.tobytes() for f in sets.held_out}
    shapes = {f.shape for f in sets.calibration}
    assert len(shapes) == 2, "calibration frames come from every video (their shapes differ), not the first"


def _rows(*boxes: tuple[float, float, float, float, float, int]) -> np.ndarray:
    return np.array(boxes, dtype=np.float32).reshape(-1, 6)


@pytest.mark.parametrize(
    ("reference", "candidate", "matched"),
    [
        (_rows((0, 0, 10, 10, 0.9, 1)), _rows((0, 0, 10, 10, 0.8, 1)), 1),
        (_rows((0, 0, 10, 10, 0.9, 1)), _rows((0, 0, 10, 10, 0.8, 2)), 0),  # another class
        (_rows((0, 0, 10, 10, 0.9, 1)), _rows((5, 0, 15, 10, 0.8, 1)), 0),  # IoU 1/3
        (_rows((0, 0, 10, 10, 0.9, 1)), _rows((0, 0, 10, 10, 0.8, 1), (0, 0, 10, 9, 0.7, 1)), 1),  # one each
        (_rows((0, 0, 10, 10, 0.9, 1), (0, 0, 10, 9, 0.8, 1)), _rows((0, 0, 10, 9.5, 0.8, 1)), 1),
        (_rows(), _rows((0, 0, 10, 10, 0.8, 1)), 0),
    ],
)
def test_boxes_match_one_to_one_within_their_class_at_iou_half(reference, candidate, matched) -> None:
    assert match_frame(reference, candidate)[0] == matched


def test_agreement_counts_precision_recall_f1_and_mean_iou_over_frames() -> None:
    ref = [_rows((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.9, 0)), _rows((0, 0, 10, 10, 0.9, 3))]
    cand = [_rows((0, 0, 10, 8, 0.9, 0)), _rows((0, 0, 10, 10, 0.9, 3), (50, 50, 60, 60, 0.5, 3))]
    a = agreement(ref, cand)
    assert (a.reference_boxes, a.boxes, a.matched) == (3, 3, 2)
    assert a.precision == pytest.approx(2 / 3) and a.recall == pytest.approx(2 / 3) and a.f1 == pytest.approx(2 / 3)
    assert a.mean_iou == pytest.approx((0.8 + 1.0) / 2)
