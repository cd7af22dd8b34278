"""``python -m server_config.model``: the built model's size, determinism, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from server_config.model.build import build_model
from server_config.model.stats import count_gflops, count_parameters

from .synthetic_exports import make_export
from server_config.model.contract_graph import HeadLayout


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server_config.model", *args], capture_output=True, text=True)


def test_built_yolov8n_has_ultralytics_parameter_count_and_gflops() -> None:
    model = build_model(size="n")
    assert count_parameters(model) == pytest.approx(3.2e6, rel=0.05)
    assert count_gflops(model, 640) == pytest.approx(8.7, rel=0.05)


def test_build_writes_the_same_bytes_every_time(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert cli("build", "--imgsz", "320", "--out", str(a)).returncode == 0
    assert cli("build", "--imgsz", "320", "--out", str(b)).returncode == 0
    assert a.read_bytes() == b.read_bytes()
    assert build_model(seed=1).SerializeToString() != build_model(seed=0).SerializeToString()


def test_wrap_cli_writes_a_contract_model(tmp_path: Path) -> None:
    export = tmp_path / "export.onnx"
    onnx.save(make_export(HeadLayout.ULTRALYTICS, names={0: "a", 1: "b", 2: "c"}), export)
    out = tmp_path / "out" / "model.onnx"
    result = cli("wrap", str(export), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert [i.name for i in onnx.load(out).graph.input] == ["images"]


def _no_head_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["out"], axes=[2, 3], keepdims=0)],
        "classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _odd_layout_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["out"])],
        "odd",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 3, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 9])],
        [helper.make_tensor("shape", TensorProto.INT64, [3], [1, 3, 9])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_onnx", "not a valid ONNX model"),
        ("missing", "no such file"),
        ("no_head", "no YOLO head"),
        ("odd_layout", "unknown output layout"),
        ("unwritable", "cannot write"),
    ],
)
def test_bad_input_gives_one_error_line_exit_1_and_writes_nothing(tmp_path: Path, case: str, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    export = src / "export.onnx"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    if case == "not_onnx":
        export.write_text("this is not a model\n")
    elif case == "no_head":
        onnx.save(_no_head_model(), export)
    elif case == "odd_layout":
        onnx.save(_odd_layout_model(), export)
    elif case == "unwritable":
        onnx.save(make_export(HeadLayout.ULTRALYTICS), export)
        blocker = out_dir / "file"
        blocker.write_text("x")
        out = blocker / "model.onnx"  # a path under a regular file: unwritable even for root
    args = ("wrap", str(export), "--out", str(out))
    result = cli(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == (["file"] if case == "unwritable" else [])


def test_build_rejects_an_image_size_that_is_not_a_multiple_of_32(tmp_path: Path) -> None:
    result = cli("build", "--imgsz", "100", "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 1 and "multiple of 32" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["build", "wrap"])
def test_an_existing_model_is_replaced_only_with_force(tmp_path: Path, command: str) -> None:
    export = tmp_path / "export.onnx"
    onnx.save(make_export(HeadLayout.ULTRALYTICS), export)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    out.write_bytes(b"a user's wrapped, trained model")
    args = ("build", "--imgsz", "320") if command == "build" else ("wrap", str(export))
    refused = cli(*args, "--out", str(out))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0]
    assert out.read_bytes() == b"a user's wrapped, trained model" and [p.name for p in out_dir.iterdir()] == ["model.onnx"]
    forced = cli(*args, "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert [i.name for i in onnx.load(out).graph.input] == ["images"]
