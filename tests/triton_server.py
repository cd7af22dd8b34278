"""A real local Triton for the tests: free loopback ports, a small model repository of its own."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from server_config.local import LocalServerConfig, LocalTriton, MissingPrerequisiteError
from server_config.model.paths import MODEL_NAME, MODEL_REPOSITORY

# A model that is served but breaks the contract (FP32 NCHW input): for the start-up check.
OTHER_CONFIG = """name: "other"
backend: "python"
max_batch_size: 8
input [ { name: "images" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]
output [ { name: "detections" data_type: TYPE_FP32 dims: [ 300, 6 ] },
         { name: "num_detections" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
OTHER_MODEL = """import os
import sys

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError("not used")) for _ in requests]
"""

# A model that holds each request until the test opens its gate: it touches gate.arrived
# beside the models when a request comes and answers once gate.open is there, so the request
# keeps its shared-memory region in use for exactly as long as the test says.
GATE_CONFIG = """name: "gate"
backend: "python"
max_batch_size: 8
input [ { name: "images" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]
output [ { name: "num_detections" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
GATE_MODEL = """import os
import sys
import time
from pathlib import Path

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
import numpy as np
import triton_python_backend_utils as pb_utils

GATE = Path(__file__).resolve().parents[2] / "gate.open"
ARRIVED = GATE.with_name("gate.arrived")


class TritonPythonModel:
    def execute(self, requests):
        ARRIVED.touch()
        deadline = time.monotonic() + 60
        while not GATE.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        out = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "images").as_numpy().shape[0]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("num_detections", np.zeros((n, 1), np.int32))]))
        return out
"""


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def make_repository(root: Path, model_onnx: Path) -> Path:
    """The project's yolo model folder with the test's small model.onnx, plus the 'other' model."""
    repo = root / "model_repository"
    yolo = repo / MODEL_NAME
    (yolo / "1").mkdir(parents=True)
    (yolo / "configs").mkdir()
    shutil.copy(MODEL_REPOSITORY / MODEL_NAME / "configs" / "cpu.pbtxt", yolo / "configs" / "cpu.pbtxt")
    shutil.copy(MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py", yolo / "1" / "model.py")
    shutil.copy(model_onnx, yolo / "1" / "model.onnx")
    other = repo / "other"
    (other / "1").mkdir(parents=True)
    (other / "configs").mkdir()
    (other / "configs" / "cpu.pbtxt").write_text(OTHER_CONFIG)
    (other / "1" / "model.py").write_text(OTHER_MODEL)
    return repo


def add_bare_model(repo: Path, model_onnx: Path, name: str = "bare") -> None:
    """A contract model served without framestream's metadata (so without its parameters):
    as a model put into a repository by hand."""
    import onnx

    model = onnx.load(str(model_onnx))
    del model.metadata_props[:]
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "configs").mkdir()
    config = (MODEL_REPOSITORY / MODEL_NAME / "configs" / "cpu.pbtxt").read_text()
    config = config.replace(f'name: "{MODEL_NAME}"', f'name: "{name}"').replace("count: 2", "count: 1")
    (repo / name / "configs" / "cpu.pbtxt").write_text(config)
    shutil.copy(MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py", repo / name / "1" / "model.py")
    onnx.save(model, str(repo / name / "1" / "model.onnx"))


def add_gate_model(repo: Path) -> None:
    """The 'gate' model (GATE_MODEL): its files gate.arrived and gate.open lie in ``repo``."""
    (repo / "gate" / "1").mkdir(parents=True)
    (repo / "gate" / "configs").mkdir()
    (repo / "gate" / "configs" / "cpu.pbtxt").write_text(GATE_CONFIG)
    (repo / "gate" / "1" / "model.py").write_text(GATE_MODEL)


def start_server(repo: Path, ports: list[int] | None = None, instances: int | None = None) -> LocalTriton:
    grpc, http, metrics = ports or free_ports(3)
    config = LocalServerConfig(model_repository=repo, grpc_port=grpc, http_port=http, metrics_port=metrics,
                               instances=instances, startup_timeout_s=90)
    try:
        return LocalTriton(config).start()
    except MissingPrerequisiteError as e:  # anything else is a failure, not a skip
        pytest.skip(f"cannot start a local Triton here: {e}")
