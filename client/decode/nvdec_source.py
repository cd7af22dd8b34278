"""GPU decoding with NVDEC (PyNvVideoCodec): frames stay on the GPU, letterboxed by CUDA.

Container facts (time base, start, colour matrix and range, rotation) come from PyAV, so
numbering and timestamps are the CPU path's exactly: frames are counted in the decoder's
output (presentation) order and ``t`` is (pts - start) x time base. What NVDEC is not used
for here (rotated videos, --keyframes, key-frame segments, codecs it lacks) raises
:class:`NvdecUnsupported`, and the caller decodes that job with PyAV instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import av

from ..colour import Colour, stream_colour
from ..errors import DecodeError
from ..gpu.letterbox import GpuLetterbox, Nv12Picture
from ..letterbox import LetterboxPlan
from . import DecodedFrame, PlanFor, Sampling
from .sampling import select

log = logging.getLogger(__name__)

# FFmpeg codec names that NVDEC decodes on current GPUs.
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "vp8", "mpeg2video", "mpeg4", "mjpeg", "vc1"})


class NvdecUnsupported(Exception):
    """This job is not for NVDEC; decode it on the CPU. The message says why."""


def nvdec_refusal(codec: str, rotation: int, sampling: Sampling, segmented: bool, pix_fmt: str | None) -> str | None:
    """Why a job goes to PyAV instead of NVDEC, or None. Pure, so it is tested on CPU."""
    if codec not in NVDEC_CODECS:
        return f"codec {codec} is not decoded by NVDEC"
    if pix_fmt not in (None, "yuv420p", "yuvj420p", "nv12"):
        return f"pixel format {pix_fmt} (the CUDA letterbox takes 8-bit 4:2:0)"
    if rotation % 360:
        return f"rotation {rotation} (the CUDA letterbox does not rotate)"
    if sampling.keyframes:
        return "--keyframes (PyAV skips non-key frames without decoding them)"
    if segmented:
        return "a key-frame segment (NVDEC here decodes whole files)"
    return None


class NvdecSource:
    def __init__(self, path: Path, *, sampling: Sampling, letterbox: GpuLetterbox, gpu_id: int = 0,
                 segmented: bool = False) -> None:
        self.path = path
        self.sampling = sampling
        self.gpu_id = gpu_id
        self._letterbox = letterbox
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DecodeError("no video stream")
                s = container.streams.video[0]
                if s.codec_context is None:
                    raise DecodeError("unsupported video codec: this FFmpeg build has no decoder for it")
                first = next(container.decode(s), None)
                rotation = first.rotation if first is not None else 0
                cc = s.codec_context
                self._time_base, self._start = s.time_base, s.start_time or 0
                self._colour: Colour = stream_colour(cc)
                self._size_hw = (cc.height, cc.width)
                refusal = nvdec_refusal(cc.name, rotation or 0, sampling, segmented,
                                        cc.pix_fmt if cc.pix_fmt else None)
        except av.FFmpegError as e:
            raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
        if refusal:
            raise NvdecUnsupported(refusal)

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        import PyNvVideoCodec as nvc

        plan: LetterboxPlan = plan_for(self._size_hw)
        try:
            demuxer = nvc.CreateDemuxer(filename=str(self.path))
            decoder = nvc.CreateDecoder(gpuid=self.gpu_id, codec=demuxer.GetNvCodecId(), usedevicememory=True)
        except Exception as e:  # PyNvVCException*: this GPU or build cannot take the stream
            log.info("%s: NVDEC refused the stream (%s); decoding it with PyAV", self.path.name,
                     str(e).splitlines()[0][:120])
            yield from self._pyav_frames(plan_for)
            return
        count = 0

        def decoded():
            nonlocal count
            for packet in demuxer:
                for frame in decoder.Decode(packet):
                    pts = frame.getPTS()
                    t = float((pts - self._start) * self._time_base)
                    yield count, t, _surface_copy(frame)  # the decoder reuses its surfaces
                    count += 1

        try:
            for index, t, nv12 in select(decoded(), self.sampling):
                yield DecodedFrame(index, t, Nv12Picture(nv12, plan, self._colour, self._letterbox), plan)
        except Exception as e:  # decoder errors surface as RuntimeError/PyNvVCException
            raise DecodeError(f"NVDEC failed after {count} frames: {str(e).splitlines()[0][:160]}",
                              frames_decoded=count) from e

    def _pyav_frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        """Host frames; the pipeline uploads each into its slot of the device batch."""
        from .pyav_source import PyAVSource

        with PyAVSource(self.path, sampling=self.sampling) as source:
            yield from source.frames(plan_for)

    def close(self) -> None:
        pass

    def __enter__(self) -> "NvdecSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _surface_copy(frame):
    """The decoded NV12 surface as a CuPy [rows, width] array of our own."""
    import cupy as cp

    try:
        arr = cp.from_dlpack(frame)
    except (TypeError, AttributeError, ValueError):
        planes = frame.cuda()
        luma = cp.asarray(planes[0])
        chroma = cp.asarray(planes[1]).reshape(luma.shape[0] // 2, -1)
        arr = cp.concatenate([luma.reshape(luma.shape[0], -1), chroma], axis=0)
    if arr.ndim == 3:
        arr = arr.reshape(arr.shape[0], -1)
    return arr.copy()
