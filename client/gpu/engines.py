"""How many NVDEC sessions a GPU path run starts by default: one per decode engine.

One decoder session runs on one NVDEC engine, so a fixed count leaves engines idle on GPUs
with more (an H200 has seven) and queues sessions on GPUs with fewer. PyNvVideoCodec reports
the count (``GetDecoderCaps(...)["num_decoder_engines"]``, asked for 8-bit 4:2:0 H.264); where
it cannot (an older library, no driver), :data:`client.defaults.GPU_WORKERS` is used.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

from .. import defaults

log = logging.getLogger(__name__)

Caps = Callable[[int], Mapping[str, object]]


def _pynvvideocodec_caps(gpu_id: int) -> Mapping[str, object]:
    import PyNvVideoCodec as nvc

    return nvc.GetDecoderCaps(gpuid=gpu_id, codec=nvc.cudaVideoCodec.H264,
                              chromaformat=nvc.cudaVideoChromaFormat._420, bitdepthminus8=0)


def decoder_engines(gpu_id: int = 0, caps: Caps | None = None) -> int | None:
    """NVDEC engines of GPU ``gpu_id``, or None when the library does not say."""
    try:
        n = (caps or _pynvvideocodec_caps)(gpu_id)["num_decoder_engines"]
        n = int(n)
    except Exception as e:  # no such call or key in this build, no driver: unknown, not an error
        log.debug("NVDEC engine count unknown on GPU %d: %s", gpu_id, e)
        return None
    return n if n > 0 else None


def gpu_workers(gpu_id: int = 0, caps: Caps | None = None) -> int:
    """The default decode workers on the GPU path: the engine count, else GPU_WORKERS."""
    engines = decoder_engines(gpu_id, caps)
    if engines is None:
        log.info("workers: %d NVDEC sessions (the GPU's decode engines are not reported)", defaults.GPU_WORKERS)
        return defaults.GPU_WORKERS
    log.info("workers: %d NVDEC sessions, one per decode engine of GPU %d", engines, gpu_id)
    return engines
