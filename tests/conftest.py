"""Shared fixtures: a built contract model, built once per session (it is size-independent)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Iterator

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


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("64k")`` mounts a tmpfs of that size (a disk that really fills up) and returns
    its path; skips with the reason where mounting is not allowed. Unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)
