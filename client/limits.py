"""The bounds of the command line's numbers, each with its reason, checked before any work.

A number outside them is a :class:`~client.errors.UsageError` (one line, exit 1, nothing
written) instead of a traceback, a hang or an allocation the machine cannot make. Bounds
refuse only values that cannot work or cannot help; a large value that is merely more than a
video offers is legal and costs nothing extra (``--fps`` above a video's frame rate infers
every frame, ``--every`` beyond its length its first frame, more shards than files leaves
some empty).
"""

from __future__ import annotations

import math

from .errors import UsageError

__all__ = ["MAX_BATCH", "MAX_WORKERS", "MAX_INFLIGHT", "MAX_RETRY_S", "MAX_SHARDS", "MAX_PORT", "ascii_digits",
           "check_int", "check_real", "check_port"]

# A batch's frames are held in memory at once, letterboxed: 1024 frames at 640x640 are 1.2 GiB.
MAX_BATCH = 1024
# Each decoder is a thread with its own FFmpeg decoder and frames in flight; decoding never needed
# more than a few (results/bulk_scalability.md, results/gpu_check.md: 8 NVDEC sessions gave
# little over 4).
MAX_WORKERS = 256
# Each request in flight has its own gRPC connection and input buffer (a shared-memory region
# of batch x model size^2 x 3 bytes); Triton runs a handful of instances of a model.
MAX_INFLIGHT = 256
# A server unreachable for a day is not coming back within this run.
MAX_RETRY_S = 86400.0
# Kubernetes' limit on an Indexed Job's completions; the merged summary lists missing shards.
MAX_SHARDS = 100_000
MAX_PORT = 65535  # TCP


def ascii_digits(text: str) -> bool:
    """A whole number as the command line may write it: ASCII digits only (``str.isdigit``
    alone also takes '²', which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def check_int(option: str, value: int | None, low: int, high: int | None = None, *, why: str = "") -> None:
    """``low <= value <= high`` (no upper bound when ``high`` is None); None is the default: fine."""
    if value is None:
        return
    if value < low or (high is not None and value > high):
        span = f"at least {low}" if high is None else f"from {low} to {high}"
        raise UsageError(f"{option} must be {span}{f' ({why})' if why else ''}, got {value}")


def check_real(option: str, value: float | None, *, low: float, high: float | None = None,
               low_open: bool = False, why: str = "") -> None:
    """A finite ``value`` in ``[low, high]`` (``(low, high]`` when ``low_open``); nan and inf never pass."""
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        if high is None:
            span = f"a finite number above {low:g}" if low_open else f"a finite number of at least {low:g}"
        else:
            span = f"a number {'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
        raise UsageError(f"{option} must be {span}{f' ({why})' if why else ''}, got {value:g}")


def check_port(option: str, value: int | None) -> None:
    check_int(option, value, 1, MAX_PORT, why="a TCP port")
