"""Reading and atomically writing ONNX files, with every failure as one ModelError line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from client.errors import ModelError, UsageError


def load_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ... for a bad file
        raise ModelError(f"{path}: not a valid ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from e
    return model


def save_onnx_atomically(model: onnx.ModelProto, out: Path) -> None:
    """Write to a temporary file beside ``out`` and rename, so no partial model is ever seen."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the model from a non-root server
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, out)
    except BaseException as e:  # a signal during start-up too: no temporary left behind
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UsageError(f"cannot write {out}: {e.strerror}") from e
        raise
