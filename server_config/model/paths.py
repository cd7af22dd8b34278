"""Where framestream's Triton configs and the default model live, resolved from the package, not the CWD.

The configs are read-only data: ``model_repository/`` in a clone, and the same files shipped
inside the installed package (``server_config/model_repository/``, mapped by pyproject.toml).
What framestream builds for the user (the default model) goes to a cache folder of the
user's, never beside the code, which may be a read-only or shared install.
"""

from __future__ import annotations

import os
from pathlib import Path

from client.contract import MODEL_NAME

__all__ = ["REPO_ROOT", "MODEL_REPOSITORY", "MODEL_NAME", "HOME_ENV", "framestream_home", "default_model_path"]

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the packages: a clone's root, or site-packages
_PACKAGED = Path(__file__).resolve().parents[1] / "model_repository"  # present only in an installed package
MODEL_REPOSITORY = _PACKAGED if _PACKAGED.is_dir() else REPO_ROOT / "model_repository"
HOME_ENV = "FRAMESTREAM_HOME"


def framestream_home() -> Path:
    """``$FRAMESTREAM_HOME``, else ``$XDG_CACHE_HOME/framestream``, else ``~/.cache/framestream``
    (a relative ``XDG_CACHE_HOME`` is ignored, as the XDG spec says)."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "framestream"


def default_model_path() -> Path:
    """The model used when none is named: ``framestream_home() / "model.onnx"``. A clone's
    ``model_repository/yolo/1/model.onnx``, built or wrapped there by earlier versions, is still
    used unless ``$FRAMESTREAM_HOME`` is set, so a wrapped trained model is not silently replaced."""
    in_clone = MODEL_REPOSITORY / MODEL_NAME / "1" / "model.onnx"
    if not os.environ.get(HOME_ENV) and (in_clone.is_file() or in_clone.is_symlink()):
        return in_clone
    return framestream_home() / "model.onnx"
