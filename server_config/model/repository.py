"""Writing what the client must know about a served model into its Triton config.

Triton answers ``get_model_config`` with the config, not the ONNX file's metadata, so the
metadata and the digest (sha256 of the model.onnx bytes) go into the config's
``parameters`` as ``framestream_*`` string values, inside one marked block that is
replaced, never duplicated, on each write. The block describes the model folder's highest
version (what Triton's default version policy serves).

Who writes it: ``python -m server_config.model build|wrap`` when ``--out`` lies in a model
repository (``<repo>/<model>/<version>/model.onnx`` beside a config), ``... stamp MODEL_DIR``
for a model put there by hand, ``server_config.local`` in the copy it serves, and
compose's ``model-init``. The project's own ``model_repository/`` is the exception: its
configs are tracked templates, so build and wrap leave them untouched (a model rebuilt
would otherwise show as a change to commit); ``server_config.local`` stamps its served copy
instead. ``stamp`` still writes there when asked by name.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path

from client.contract import META, ModelInfo, model_digest
from client.errors import ModelError, UsageError

from .paths import MODEL_REPOSITORY

__all__ = ["BEGIN", "END", "served_info", "stamp_text", "config_files", "latest_model", "stamp_model_dir",
           "repository_model_dir"]

BEGIN = "# framestream: the served model (written by server_config; replaced on every write, do not edit)"
END = "# framestream: end of the served model"
_BLOCK = re.compile(rf"\n*{re.escape(BEGIN)}\n.*?{re.escape(END)}\n?", re.DOTALL)


def served_info(model_onnx: Path) -> ModelInfo | None:
    """The model's metadata and digest; None for an ONNX file that is not a framestream model."""
    import onnx

    try:
        model = onnx.load(str(model_onnx), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for a bad file
        raise ModelError(f"{model_onnx}: not a valid ONNX model ({type(e).__name__})") from e
    meta = {p.key: p.value for p in model.metadata_props}
    if META.CONTRACT not in meta:
        return None
    try:
        info = ModelInfo.from_metadata(meta, input_shape=(None,))
    except (KeyError, ValueError) as e:
        raise ModelError(f"{model_onnx}: framestream metadata is incomplete ({e})") from e
    return replace(info, digest=model_digest(model_onnx))


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def stamp_text(config: str, info: ModelInfo) -> str:
    """``config`` with its framestream block replaced by one describing ``info``."""
    lines = [BEGIN]
    for key, value in info.to_config_parameters().items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    lines.append(END)
    return _BLOCK.sub("\n", config).rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"


def config_files(model_dir: Path) -> list[Path]:
    """The model's configs: ``config.pbtxt`` and any ``configs/*.pbtxt`` (--model-config-name)."""
    return [p for p in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))] if p.is_file()]


def latest_model(model_dir: Path) -> Path | None:
    versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return next((v / "model.onnx" for _, v in reversed(versions) if (v / "model.onnx").is_file()), None)


def stamp_model_dir(model_dir: Path) -> list[Path]:
    """Write the block for the latest version's model.onnx into every config of ``model_dir``;
    the configs written (none for a model that is not framestream's)."""
    configs = config_files(model_dir)
    model = latest_model(model_dir) if model_dir.is_dir() else None
    if not configs or model is None:
        raise UsageError(f"{model_dir}: expected a Triton model folder with config.pbtxt (or configs/*.pbtxt) "
                         "and <version>/model.onnx")
    info = served_info(model)
    if info is None:
        return []
    for config in configs:
        _write_atomically(config, stamp_text(config.read_text(), info))
    return configs


def repository_model_dir(out: Path) -> Path | None:
    """The model folder whose configs describe ``out`` (``<model>/<version>/model.onnx`` beside a
    config), or None: not in a repository, or in the project's own (tracked templates)."""
    model_dir = out.resolve().parent.parent
    if out.name != "model.onnx" or not out.resolve().parent.name.isdigit() or not config_files(model_dir):
        return None
    if model_dir.is_relative_to(MODEL_REPOSITORY.resolve()):
        return None
    return model_dir


def _write_atomically(path: Path, text: str) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # readable by a server running as another user
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
