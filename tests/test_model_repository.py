"""Both Triton configs state the serving contract, exactly as client/contract.py defines it."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from client.contract import DETECTIONS, INPUT, MAX_BATCH, NUM_DETECTIONS
from server_config.model.paths import MODEL_NAME, MODEL_REPOSITORY

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc]")

CONFIGS = [MODEL_REPOSITORY / MODEL_NAME / "config.pbtxt", MODEL_REPOSITORY / MODEL_NAME / "configs" / "cpu.pbtxt"]


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


def test_gpu_config_runs_tensorrt_fp16_on_gpu_instances_with_warmup() -> None:
    config = load(CONFIGS[0])
    assert config.backend == "onnxruntime"
    assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_GPU}
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    max_shape = trt.parameters["trt_profile_max_shapes"]
    assert max_shape == f"{INPUT.name}:{MAX_BATCH}x640x640x3"
    assert config.model_warmup and config.model_warmup[0].inputs[INPUT.name].data_type == model_config_pb2.TYPE_UINT8


def test_cpu_config_runs_the_python_backend_on_cpu_instances() -> None:
    config = load(CONFIGS[1])
    assert config.backend == "python"
    assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_CPU}
    assert (MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py").is_file()
