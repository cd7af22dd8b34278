"""model_repository/yolo/1/model.py run here with onnxruntime on the CPU, behind a stand-in for
Triton's python-backend utilities: the cpu path answers, the gpu path refuses to load rather
than run on the CPU, and the gpu path's binding of one request reads DLPack tensors."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from client.contract import DETECTIONS, INPUT, NUM_DETECTIONS
from server_config.model.paths import MODEL_NAME, MODEL_REPOSITORY

MODEL_PY = MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py"


class Tensor:
    def __init__(self, name: str, array: np.ndarray, on_gpu_capsule: object = None) -> None:
        self.name, self._array, self._capsule = name, array, on_gpu_capsule

    def as_numpy(self) -> np.ndarray:
        return self._array

    def is_cpu(self) -> bool:
        return self._capsule is None

    def to_dlpack(self) -> object:
        return self._capsule


class TritonError(Exception):
    pass


class InferenceResponse:
    def __init__(self, output_tensors: list | None = None, error: TritonError | None = None) -> None:
        self.outputs = {t.name: t.as_numpy() for t in output_tensors or []}
        self.error = error


def stand_in_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor, pb.TritonError, pb.InferenceResponse = Tensor, TritonError, InferenceResponse
    pb.get_input_tensor_by_name = lambda request, name: request[name]
    return pb


@pytest.fixture
def model_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in_pb_utils())
    spec = importlib.util.spec_from_file_location("framestream_yolo_model", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def args_for(model_dir: Path, config: str, kind: str) -> dict:
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    parsed = text_format.Parse((MODEL_REPOSITORY / MODEL_NAME / "configs" / f"{config}.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    return {"model_config": json.dumps(json_format.MessageToDict(parsed, preserving_proto_field_name=True)),
            "model_repository": str(model_dir), "model_version": "1", "model_instance_kind": kind,
            "model_instance_device_id": "0"}


@pytest.fixture
def model_dir(tmp_path: Path, model_path: Path) -> Path:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.onnx").symlink_to(model_path)
    return tmp_path


def test_the_cpu_config_runs_requests_on_the_cpu(model_module, model_dir: Path) -> None:
    model = model_module.TritonPythonModel()
    model.initialize(args_for(model_dir, "cpu", "CPU"))
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    frames = np.full((2, 64, 96, 3), 114, np.uint8)
    (response,) = model.execute([{INPUT.name: Tensor(INPUT.name, frames)}])
    assert response.error is None and response.outputs[DETECTIONS.name].shape == (2, *DETECTIONS.dims)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="needs an onnxruntime without CUDA")
def test_the_gpu_config_refuses_to_load_where_onnxruntime_has_no_cuda_provider(model_module, model_dir: Path) -> None:
    model = model_module.TritonPythonModel()
    with pytest.raises(model_module.GpuUnavailableError) as refused:
        model.initialize(args_for(model_dir, "gpu", "GPU"))
    said = str(refused.value)
    assert "CUDA provider" in said and "onnxruntime-gpu" in said and "--model-config-name cpu" in said
    assert not hasattr(model, "session"), "no session was made to run on the CPU instead"


def test_the_gpu_config_refuses_cpu_instances(model_module, model_dir: Path) -> None:
    with pytest.raises(model_module.GpuUnavailableError, match="KIND_GPU"):
        model_module.TritonPythonModel().initialize(args_for(model_dir, "gpu", "CPU"))


def test_a_session_that_came_up_on_the_cpu_instead_of_cuda_is_refused(model_module, model_dir: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime, asked for CUDA and unable to start it, logs a warning and runs on the CPU."""
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession",
                        lambda path, options, providers: real(path, options, providers=["CPUExecutionProvider"]))
    with pytest.raises(model_module.GpuUnavailableError, match="fell back to"):
        model_module.TritonPythonModel().initialize(args_for(model_dir, "gpu", "GPU"))


def gpu_path_on_cpu(model_module, model_path: Path):
    """The gpu code path's request handling, its session on the CPU (no CUDA here)."""
    model = model_module.TritonPythonModel()
    model.device, model.device_id = "gpu", 0
    model.session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return model


class CountingSession:
    """The session, with its I/O-binding runs counted and plain runs refused."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session, self.bound_runs = session, 0

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, binding) -> None:
        self.bound_runs += 1
        self.session.run_with_iobinding(binding)

    def run(self, *args, **kwargs):
        raise AssertionError("the gpu path runs through I/O binding, never session.run")


def test_the_gpu_path_binds_each_request_s_input_and_answers_each_request(model_module, model_path: Path) -> None:
    model = gpu_path_on_cpu(model_module, model_path)
    reference = model.session
    model.session = counting = CountingSession(reference)
    a, b, c = (np.full((n, 64, 96, 3), v, np.uint8) for n, v in ((1, 114), (3, 30), (2, 200)))
    responses = model.execute([{INPUT.name: Tensor(INPUT.name, x)} for x in (a, b, c)])
    assert [r.error for r in responses] == [None, None, None]
    assert counting.bound_runs == 3, "one bound run per request: GPU inputs are never stacked (a copy)"
    assert [r.outputs[NUM_DETECTIONS.name].shape for r in responses] == [(1, 1), (3, 1), (2, 1)]
    expected = reference.run(None, {INPUT.name: b})
    assert np.array_equal(responses[1].outputs[DETECTIONS.name], expected[0])


def test_a_gpu_input_on_another_device_is_an_error_for_that_request_alone(model_module, model_path: Path) -> None:
    model = gpu_path_on_cpu(model_module, model_path)
    host = np.full((1, 64, 96, 3), 114, np.uint8)
    wrong = {INPUT.name: Tensor(INPUT.name, host, on_gpu_capsule=host.__dlpack__())}  # "GPU" tensor in host memory
    good = {INPUT.name: Tensor(INPUT.name, host)}
    bad, ok = model.execute([wrong, good])
    assert "device type 1" in str(bad.error) and ok.error is None


def test_dlpack_view_reads_pointer_shape_and_device_and_refuses_what_cannot_be_bound(model_module) -> None:
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    kind, device, pointer, shape = model_module.dlpack_view(frames.__dlpack__())
    assert (kind, device, pointer, shape) == (1, 0, frames.ctypes.data, (2, 4, 6, 3))
    with pytest.raises(ValueError, match="not contiguous"):
        model_module.dlpack_view(frames[:, :, ::2].__dlpack__())
    with pytest.raises(ValueError, match="uint8"):
        model_module.dlpack_view(frames.astype(np.float32).__dlpack__())
