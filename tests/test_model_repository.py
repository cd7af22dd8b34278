"""Both Triton configs state the serving contract, exactly as client/contract.py defines it, and
the served model's parameters are written into a repository's configs, never the tracked ones."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from client.contract import (CONFIG_PREFIX, COCO_NAMES, DEFAULT_IMGSZ, DETECTIONS, INPUT, MAX_BATCH, NUM_DETECTIONS,
                             ModelInfo)
from client.letterbox import plan_letterbox
from server_config.model.paths import MODEL_NAME, MODEL_REPOSITORY
from server_config.model.repository import BEGIN

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc]")

CONFIGS = [MODEL_REPOSITORY / MODEL_NAME / "config.pbtxt", MODEL_REPOSITORY / MODEL_NAME / "configs" / "cpu.pbtxt",
           MODEL_REPOSITORY / MODEL_NAME / "configs" / "gpu.pbtxt"]


def load(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_states_the_contract(path: Path) -> None:
    config = load(path)
    dtype = lambda spec: model_config_pb2.DataType.Value("TYPE_" + spec.triton_dtype)  # noqa: E731
    assert config.name == MODEL_NAME and config.max_batch_size == MAX_BATCH
    assert [(i.name, i.data_type, tuple(i.dims)) for i in config.input] == [(INPUT.name, dtype(INPUT), INPUT.dims)]
    assert [(o.name, o.data_type, tuple(o.dims)) for o in config.output] == [
        (spec.name, dtype(spec), spec.dims) for spec in (DETECTIONS, NUM_DETECTIONS)
    ]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert sum(g.count for g in config.instance_group) >= 2


def test_gpu_config_runs_the_whole_graph_on_cuda_gpu_instances_with_warmup() -> None:
    config = load(CONFIGS[0])
    assert config.backend == "onnxruntime"
    assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_GPU}
    accelerators = [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator]
    assert accelerators == [], ("TensorRT through onnxruntime gets subgraphs of the NMS tail whose inputs no "
                                "explicit profile covers, and the model does not load (issue 19, finding 4)")
    assert config.model_warmup and config.model_warmup[0].inputs[INPUT.name].data_type == model_config_pb2.TYPE_UINT8


def test_cpu_config_runs_the_python_backend_on_cpu_instances() -> None:
    config = load(CONFIGS[1])
    assert config.backend == "python"
    assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_CPU}
    assert (MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py").is_file()


def test_gpu_python_config_runs_the_model_code_on_gpu_instances_with_gpu_inputs_and_warmup() -> None:
    config = load(CONFIGS[2])
    assert config.backend == "python" and (MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py").is_file()
    assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_GPU}
    params = _params(CONFIGS[2])
    assert params["device"] == "gpu" and params["FORCE_CPU_ONLY_INPUT_TENSORS"] == "no"
    warmups = [(w.batch_size, w.inputs[INPUT.name].data_type, tuple(w.inputs[INPUT.name].dims)) for w in config.model_warmup]
    assert {b for b, _, _ in warmups} >= {8, 16} and all(b <= MAX_BATCH for b, _, _ in warmups)
    assert all(t == model_config_pb2.TYPE_UINT8 and dims == (384, 640, 3) for _, t, dims in warmups)


def test_the_cpu_config_selects_the_cpu_code_path() -> None:
    assert _params(CONFIGS[1]).get("device", "cpu") == "cpu"


def sent_shapes() -> set[tuple[int, int]]:
    """Every (H, W) the client can send a 640 model: minimal letterboxes and --square, 1:8 to 8:1 and beyond."""
    sizes = [(round(1000 * 8 ** (k / 200)), 1000) for k in range(-200, 201)]  # aspect w/h from 1:8 to 8:1
    sizes += [(1, 2000), (2000, 1), (1, 1), (2, 1), (1, 2), (4320, 7680), (7680, 4320), (100, 400), (400, 100),
              (3, 65535), (65535, 3), (720, 1280), (1080, 1920), (1920, 1080), (480, 640), (800, 1920)]
    sizes += [hw for n in range(1, 641) for hw in ((n, 640), (640, n))]  # every short side of a 640 frame
    return {plan_letterbox(hw, (DEFAULT_IMGSZ, DEFAULT_IMGSZ), minimal=minimal).dst_hw
            for hw in sizes for minimal in (True, False)}


def test_every_letterbox_the_client_sends_fits_both_configs() -> None:
    shapes = sent_shapes()
    assert {(640, 160), (160, 640), (640, 32), (32, 640), (640, 288), (640, 640)} <= shapes  # 4:1, 20:1, 2.39:1
    for config in map(load, CONFIGS):
        dims = tuple(config.input[0].dims)
        misfits = [hw for hw in sorted(shapes) if any(d != -1 and d != n for d, n in zip(dims, (*hw, 3)))]
        assert not misfits, f"{config.backend}: dims {dims} reject {misfits}"


def test_the_model_infers_at_the_thinnest_letterboxes(session) -> None:
    """The thinnest letterboxes the client sends (32 high or wide) run through the graph."""
    for batch, h, w in [(1, 32, 640), (2, 640, 32), (1, 32, 32)]:
        det, num = session.run(None, {INPUT.name: np.full((batch, h, w, 3), 114, np.uint8)})
        assert det.shape == (batch, *DETECTIONS.dims) and num.shape == (batch, *NUM_DETECTIONS.dims)


def _params(path: Path) -> dict[str, str]:
    return {k: v.string_value for k, v in load(path).parameters.items()}


def _repository_copy(root: Path) -> Path:
    """The project's yolo folder (configs and model.py, no model) at ``root``/yolo."""
    model_dir = root / MODEL_NAME
    for path in CONFIGS:
        dest = model_dir / path.relative_to(MODEL_REPOSITORY / MODEL_NAME)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    return model_dir


def test_build_into_a_repository_writes_the_served_models_parameters_into_every_config(tmp_path: Path) -> None:
    from .test_model_cli import cli

    model_dir = _repository_copy(tmp_path / "repo")
    out = model_dir / "1" / "model.onnx"
    assert cli("build", "--imgsz", "256", "--out", str(out)).returncode == 0
    configs = [model_dir / path.relative_to(MODEL_REPOSITORY / MODEL_NAME) for path in CONFIGS]
    for config in configs:
        info = ModelInfo.from_config_parameters(_params(config), max_batch=MAX_BATCH)
        assert info.imgsz == (256, 256) and info.names == dict(enumerate(COCO_NAMES))
        assert info.digest == hashlib.sha256(out.read_bytes()).hexdigest()
        test_config_states_the_contract(config)  # the contract part is as it was
    first = out.read_bytes()
    result = cli("build", "--imgsz", "320", "--seed", "1", "--out", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() != first
    for config in configs:
        assert config.read_text().count(BEGIN) == 1, "the block is replaced, not added again"
        info = ModelInfo.from_config_parameters(_params(config), max_batch=MAX_BATCH)
        assert info.imgsz == (320, 320) and info.digest == hashlib.sha256(out.read_bytes()).hexdigest()


def test_stamp_writes_names_with_quotes_backslashes_and_any_script_exactly(tmp_path: Path) -> None:
    from dataclasses import replace

    from server_config.model.repository import stamp_text

    names = {0: 'a "quoted" name', 1: "back\\slash", 2: "日本語", 3: "two\nlines"}
    info = ModelInfo(imgsz=(640, 640), dynamic_hw=True, max_batch=None, names=names, source="wrapped x", digest="f" * 64)
    config = tmp_path / "config.pbtxt"
    config.write_text(stamp_text(CONFIGS[1].read_text(), info))
    assert ModelInfo.from_config_parameters(_params(config), max_batch=MAX_BATCH) == replace(info, max_batch=MAX_BATCH)


def test_the_projects_tracked_configs_hold_no_served_model_and_build_leaves_them_so() -> None:
    from server_config.model.paths import MODEL_REPOSITORY
    from server_config.model.repository import repository_model_dir

    for path in CONFIGS:
        assert not [k for k in _params(path) if k.startswith(CONFIG_PREFIX)], f"{path} is a template; commit it bare"
        assert BEGIN not in path.read_text()
    # A model built into the project's own folder leaves its configs; server_config.local stamps its served copy.
    assert repository_model_dir(MODEL_REPOSITORY / MODEL_NAME / "1" / "model.onnx") is None


@pytest.mark.parametrize("case", ["no_config", "no_model", "not_framestream"])
def test_stamp_of_a_folder_it_cannot_describe_is_one_line_exit_1(tmp_path: Path, case: str) -> None:
    import onnx

    from .test_model_cli import cli

    model_dir = _repository_copy(tmp_path / "repo")
    (model_dir / "1").mkdir()
    if case == "no_config":
        shutil.rmtree(model_dir / "configs")
        (model_dir / "config.pbtxt").unlink()
    if case != "no_model":
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), model_dir / "1" / "model.onnx")
    before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    result = cli("stamp", str(model_dir))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()} == before
