"""Where the model repository and the default model live, resolved from the package, not the CWD."""

from __future__ import annotations

from pathlib import Path

from client.contract import MODEL_NAME

__all__ = ["REPO_ROOT", "MODEL_REPOSITORY", "MODEL_NAME", "DEFAULT_MODEL_PATH"]

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
DEFAULT_MODEL_PATH = MODEL_REPOSITORY / MODEL_NAME / "1" / "model.onnx"
