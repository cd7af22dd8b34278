"""The model file an embedded run loads: --model checked, or the default one (built when missing).

With ``--server`` the served model is the truth and no file is read. Whether the run's model is
framestream's built-in untrained one is asked here too, as both the start and the end of a run
say so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import UsageError
from .inputs import not_regular

log = logging.getLogger(__name__)

__all__ = ["check_model_file", "resolve_model", "is_untrained"]


def _default_model() -> Path:
    from server_config.model.paths import default_model_path

    return default_model_path()


def resolve_model(path: Path | None, *, build: bool = True) -> Path | None:
    """The local model file for the embedded backend, built at the default place when nothing is
    there. ``build=False`` (--server): None, as the served model is the truth; no file is read."""
    if not build:
        if path is not None:
            log.warning("--model %s is not used with --server: the model Triton serves is", path)
        return None
    if path is not None:
        check_model_file(path)
        return path
    default = _default_model()
    if not default.exists() and not default.is_symlink():
        from server_config.model.build import build_model
        from server_config.model.files import save_onnx_atomically
        from server_config.model.untrained import TRAINED_MODEL_COMMAND

        log.info("no model at %s: building the default (YOLOv8n, UNTRAINED weights; '%s' gets a trained one)",
                 default, TRAINED_MODEL_COMMAND)

        try:
            save_onnx_atomically(build_model(), default)
        except UsageError as e:
            raise UsageError(f"{e}; set FRAMESTREAM_HOME to a writable folder, or pass --model") from e
    return default


def check_model_file(path: Path) -> None:
    """--model names a model file; anything else is one line saying what it is and what to pass."""
    if path.is_file():
        return
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.onnx") if p.is_file())[:3]
        hint = (f"pass the model file itself, e.g. --model {path / found[0]}" if found
                else "it holds no .onnx file; pass the model file itself (a Triton model repository is served "
                f"by 'python -m server_config.local --model-repository {path}', then --server HOST:PORT)")
        raise UsageError(f"--model {path}: a directory, not a model file; {hint}")
    if os.path.lexists(path):
        raise UsageError(f"--model {path}: {not_regular(path)}; pass an ONNX model file")
    raise UsageError(f"{path}: no such model; build one with 'python -m server_config.model build --out {path}'")


def is_untrained(model_path: Path | None, backend) -> bool:
    """Whether the run's model is framestream's built-in untrained one (by the mark ``build``
    writes in the file; a served model by the source ``build`` writes)."""
    from server_config.model.untrained import is_untrained_file, is_untrained_source

    return is_untrained_file(model_path) if model_path is not None else is_untrained_source(backend.model.source)
