"""GPU decoding with NVDEC (PyNvVideoCodec): frames stay on the GPU, letterboxed by CUDA.

Container facts (time base, start, colour matrix and range, rotation, declared length) come
from PyAV, so numbering, timestamps and completeness checks are the CPU path's exactly:
frames are counted in the decoder's output (presentation) order and ``t`` is
(pts - start) x time base. Key-frame segments and ``--keyframes`` feed NVDEC only the
packets they need (``packets.py``); rotation is applied by the kernel. A codec or pixel
format NVDEC does not take raises :class:`NvdecUnsupported`, and the caller decodes that
job with PyAV instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Generator, Iterator

import av

from ..colour import Colour, stream_colour
from ..errors import DecodeError
from ..gpu.letterbox import GpuLetterbox, Nv12Picture
from ..letterbox import LetterboxPlan, quarter_turns
from . import DecodedFrame, FrameRange, PlanFor, Sampling
from .checks import check_complete, check_range, video_info
from .layout import demux_layout
from .packets import packets_to_decode
from .sampling import select

log = logging.getLogger(__name__)

# FFmpeg codec names that NVDEC decodes on current GPUs.
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "vp8", "mpeg2video", "mpeg4", "mjpeg", "vc1"})
NVDEC_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12"})  # 8-bit 4:2:0: what the kernel reads


class NvdecUnsupported(Exception):
    """This job is not for NVDEC; decode it on the CPU. The message says why."""


def nvdec_refusal(codec: str, pix_fmt: str | None) -> str | None:
    """Why a file goes to PyAV instead of NVDEC, or None. Pure, so it is tested on CPU."""
    if codec not in NVDEC_CODECS:
        return f"codec {codec} is not decoded by NVDEC"
    if pix_fmt is not None and pix_fmt not in NVDEC_PIXEL_FORMATS:
        return f"pixel format {pix_fmt} (the CUDA letterbox takes 8-bit 4:2:0)"
    return None


class NvdecSource:
    def __init__(self, path: Path, *, sampling: Sampling, letterbox: GpuLetterbox, gpu_id: int = 0,
                 frame_range: FrameRange | None = None) -> None:
        self.path = path
        self.sampling = sampling
        self.gpu_id = gpu_id
        self.frame_range = frame_range
        self._letterbox = letterbox
        self._key_index: dict[int, int] | None = None  # --keyframes: key frame pts -> presentation index
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DecodeError("no video stream")
                s = container.streams.video[0]
                if s.codec_context is None:
                    raise DecodeError("unsupported video codec: this FFmpeg build has no decoder for it")
                first = next(container.decode(s), None)
                if first is None:
                    raise DecodeError("no frame could be decoded")
                cc = s.codec_context
                refusal = nvdec_refusal(cc.name, cc.pix_fmt or None)
                self.info = video_info(container, s)
                self._time_base, self._start = s.time_base, s.start_time or 0
                self._colour: Colour = stream_colour(cc)
                self._turns = quarter_turns(first.rotation)
                coded_hw = (first.height, first.width)
                self._display_hw = coded_hw[::-1] if self._turns % 2 else coded_hw
                if sampling.keyframes and frame_range is None and not refusal:
                    container.seek(0, stream=s, backward=True, any_frame=False)
                    layout = demux_layout(container, s)
                    self._key_index = {layout.pts[i]: i for i in layout.key_indices}
        except av.FFmpegError as e:
            raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
        except OSError as e:
            raise DecodeError(f"cannot open: {e.strerror or e}") from e
        if refusal:
            raise NvdecUnsupported(refusal)

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        import PyNvVideoCodec as nvc

        plan: LetterboxPlan = plan_for(self._display_hw)
        try:
            demuxer = nvc.CreateDemuxer(filename=str(self.path))
            decoder = nvc.CreateDecoder(gpuid=self.gpu_id, codec=demuxer.GetNvCodecId(), usedevicememory=True)
        except Exception as e:  # PyNvVCException*: this GPU or build cannot take the stream
            log.info("%s: NVDEC refused the stream (%s); decoding it with PyAV", self.path.name,
                     str(e).splitlines()[0][:120])
            yield from self._pyav_frames(plan_for)
            return
        if self.frame_range is not None:
            frames = self._range_frames(demuxer, decoder, plan, self.frame_range)
        else:
            frames = self._file_frames(demuxer, decoder, plan)
        fed = yield from frames
        if fed == 0:  # no packet matched PyAV's pts: the demuxers disagree; let PyAV do it all
            log.info("%s: NVDEC's demuxer found none of the packets to decode; decoding it with PyAV",
                     self.path.name)
            yield from self._pyav_frames(plan_for)

    def _picture(self, nv12, plan: LetterboxPlan) -> Nv12Picture:
        return Nv12Picture(nv12, plan, self._colour, self._letterbox, self._turns)

    def _t(self, pts: int) -> float:
        return float((pts - self._start) * self._time_base)

    def _file_frames(self, demuxer, decoder, plan: LetterboxPlan) -> Generator[DecodedFrame, None, int]:
        """The whole file (every frame, or its key frames only); returns the packets fed."""
        keys = self._key_index
        packets = count = 0
        last_t: float | None = None

        def decoded():
            nonlocal packets, count, last_t
            for packet in packets_to_decode(demuxer, _size, _pts, only_pts=keys):
                packets += bool(packet.bsl)
                for frame in decoder.Decode(packet):
                    pts = frame.getPTS()
                    if keys is not None and pts not in keys:
                        continue  # not a frame --keyframes asked for
                    last_t = self._t(pts)
                    index = keys[pts] if keys is not None else count
                    count += 1
                    yield index, last_t, _surface_copy(frame)  # the decoder reuses its surfaces

        try:
            for index, t, nv12 in select(decoded(), self.sampling):
                yield DecodedFrame(index, t, self._picture(nv12, plan), plan)
        except Exception as e:  # decoder errors surface as RuntimeError/PyNvVCException
            raise DecodeError(f"NVDEC failed after {count} frames: {str(e).splitlines()[0][:160]}",
                              frames_decoded=count) from e
        if packets:
            check_complete(self.info, packets, count, last_t, keyframes=keys is not None)
        return packets

    def _range_frames(self, demuxer, decoder, plan: LetterboxPlan,
                      r: FrameRange) -> Generator[DecodedFrame, None, int]:
        """A segment: decode from its key frame, emit its selected frames, stop past its end;
        returns the packets fed."""
        emitted = fed = 0
        try:
            for packet in packets_to_decode(demuxer, _size, _pts, from_pts=r.seek_pts):
                fed += bool(packet.bsl)
                done = False
                for frame in decoder.Decode(packet):
                    pts = frame.getPTS()
                    index = r.index_of_pts.get(pts)
                    if index is None or index < r.start:
                        continue  # before the range (leading frames of an open GOP)
                    if index >= r.end:
                        done = True  # presentation order: every frame of the range is out
                        break
                    if index in r.selected:
                        yield DecodedFrame(index, self._t(pts), self._picture(_surface_copy(frame), plan), plan)
                        emitted += 1
                if done:
                    break
        except Exception as e:  # decoder errors surface as RuntimeError/PyNvVCException
            raise DecodeError(f"NVDEC failed on frames {r.start}-{r.end - 1} after {emitted}: "
                              f"{str(e).splitlines()[0][:160]}", frames_decoded=emitted) from e
        if fed:
            check_range(emitted, r.expected, r.start, r.end)
        return fed

    def _pyav_frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        """Host frames; the pipeline uploads each into its slot of the device batch."""
        from .pyav_source import PyAVSource

        with PyAVSource(self.path, sampling=self.sampling, frame_range=self.frame_range) as source:
            yield from source.frames(plan_for)

    def close(self) -> None:
        pass

    def __enter__(self) -> "NvdecSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size(packet) -> int:
    return packet.bsl  # PyNvVideoCodec's PacketData: bytes in the packet, 0 at the end of the stream


def _pts(packet) -> int:
    return packet.pts


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
