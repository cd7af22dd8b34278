"""Shared fixtures: a built contract model, built once per session (it is size-independent)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from server_config.model.build import build_model
from server_config.model.files import save_onnx_atomically


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n in the contract with a 320 model size: small enough for a 2-core CI."""
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    save_onnx_atomically(build_model(size="n", imgsz=320), path)
    return path


@pytest.fixture(scope="session")
def session(model_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
