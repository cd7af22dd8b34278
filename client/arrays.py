"""Host (NumPy) or device (CuPy) arrays: one copy between them, whichever side each is on.

CuPy is imported only when a device array is actually involved, so the CPU path never
loads it.
"""

from __future__ import annotations

import numpy as np


def on_host(a) -> bool:
    return isinstance(a, np.ndarray)


def copy_into(out, src) -> None:
    """``out[...] = src`` across host and device: a copy, an upload or a download."""
    if on_host(out) and on_host(src):
        np.copyto(out, src)
    elif on_host(src):  # upload into a device slot
        out.set(np.ascontiguousarray(src))
    elif on_host(out):  # download into a host slot (pinned or shared memory)
        src.get(out=out)
    else:
        out[...] = src
