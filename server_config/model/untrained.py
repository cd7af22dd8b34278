"""Telling framestream's own untrained model from a real one.

``build`` writes :data:`UNTRAINED_KEY` into the model's metadata; ``wrap`` and ``fetch``
never do (a quantised copy of a built model keeps the metadata, and is as untrained). A
served model's metadata reaches the client only through the config's parameters, which carry
the ``source`` alone: there, the source ``build`` writes is the mark.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["UNTRAINED_KEY", "UNTRAINED_VALUE", "TRAINED_MODEL_COMMAND", "is_untrained_file", "is_untrained_source",
           "untrained_notice"]

UNTRAINED_KEY = "framestream_untrained"
UNTRAINED_VALUE = "built-in, seeded weights, never trained"
TRAINED_MODEL_COMMAND = "python -m server_config.model fetch yolov8n"


def is_untrained_file(path: Path) -> bool:
    """Whether ``path`` is a model ``build`` wrote (False for anything unreadable: not ours to judge)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...: not a built model
        return False
    return any(p.key == UNTRAINED_KEY for p in model.metadata_props)


def is_untrained_source(source: str) -> bool:
    """Whether a model's ``source`` metadata is the one ``build`` writes (for a served model)."""
    return source.startswith("framestream yolov") and source.endswith("UNTRAINED weights")


def untrained_notice() -> str:
    """What a run on the untrained model says at its start and its end."""
    return ("the model is framestream's built-in YOLOv8n with UNTRAINED weights: its boxes, or their absence, "
            f"mean nothing; '{TRAINED_MODEL_COMMAND}' downloads a trained one and makes it the default")
