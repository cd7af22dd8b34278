"""Where the model repository and the default model live, resolved from the package, not the CWD."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
MODEL_NAME = "yolo"
DEFAULT_MODEL_PATH = MODEL_REPOSITORY / MODEL_NAME / "1" / "model.onnx"
