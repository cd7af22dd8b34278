"""GPU decoding with NVDEC (PyNvVideoCodec): frames stay on the GPU, letterboxed by CUDA.

Container facts (time base, start, colour matrix and range, rotation, declared length) come
from PyAV, and the frames go through the CPU path's loop (``frames.py``), so numbering,
timestamps, sampling and completeness checks are the same code: this module only feeds
NVDEC and wraps its surfaces. Streams without timestamps (raw .h264) go to PyAV: NVDEC's
frames are placed by pts. Key-frame segments and ``--keyframes`` feed NVDEC only the
packets they need (``packets.py``); rotation is applied by the kernel. A codec or pixel
format NVDEC does not take raises :class:`NvdecUnsupported`, and the caller decodes that
job with PyAV instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import av

from ..colour import Colour, stream_colour
from ..errors import DecodeError, DeviceError
from ..gpu.faults import device_fault
from ..gpu.letterbox import GpuLetterbox, Nv12Picture
from ..gpu.streams import DecoderStream, Ready
from ..letterbox import LetterboxPlan, quarter_turns
from . import DecodedFrame, FrameRange, PlanFor, Sampling
from .checks import Demuxed, declared_rate, has_timestamps, video_info
from .container import open_video
from .frames import Clock, Cut, Feed
from .layout import Layout, demux_layout
from .packets import packets_to_decode

log = logging.getLogger(__name__)

# FFmpeg codec names that NVDEC decodes on current GPUs.
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "vp8", "mpeg2video", "mpeg4", "mjpeg", "vc1"})
NVDEC_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12"})  # 8-bit 4:2:0: what the kernel reads


class NvdecUnsupported(Exception):
    """This job is not for NVDEC; decode it on the CPU. The message says why."""


class NvdecDamage(Exception):
    """NVDEC failed on the bitstream: the file is damaged (the shared loop's ``failures``)."""


def nvdec_failure(error: Exception, gpu_id: int, *, decoding: bool = True) -> Exception:
    """What an exception out of NVDEC means, as the error to raise: the device's fault
    (:class:`DeviceError`: the run stops), or damage to the file (:class:`NvdecDamage`).
    Damage is only what the decoder (``decoding``) reports about the data: PyNvVideoCodec's
    errors come as RuntimeError or ValueError, with no sign of the device in them. Anything
    else (out of memory, CUDA or driver errors, CuPy's errors, a bug in this glue, a failed
    copy of a surface) fails every later file alike, so it is never called damage. Pure, so
    it is tested on CPU."""
    why = device_fault(error)
    reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    if decoding and why is None and isinstance(error, (RuntimeError, ValueError)):
        return NvdecDamage(reason)
    return DeviceError(f"GPU {gpu_id}: NVDEC decoding failed, {why or 'and not on the data'} "
                       f"({type(error).__name__}: {reason}); no later file would fare better, so the run stops")


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
        self._layout: Layout | None = None  # --keyframes: where the key frames are
        container, s = open_video(path)
        try:
            with container:
                first = next(container.decode(s), None)
                if first is None:
                    raise DecodeError("no frame could be decoded")
                cc = s.codec_context
                refusal = nvdec_refusal(cc.name, cc.pix_fmt or None)
                if refusal is None and (first.pts is None or not has_timestamps(container)):
                    refusal = "the stream has no timestamps (NVDEC's frames are placed by pts)"
                if refusal is None and len(container.streams.video) > 1:
                    refusal = "several video streams (NVDEC's demuxer may read another than the one chosen)"
                self.info = video_info(container, s)
                self._clock = Clock(s.time_base, s.start_time or 0, declared_rate(container, s), True)
                self._colour: Colour = stream_colour(cc)
                self._turns = quarter_turns(first.rotation)
                coded_hw = (first.height, first.width)
                self._display_hw = coded_hw[::-1] if self._turns % 2 else coded_hw
                if sampling.keyframes and frame_range is None and not refusal:
                    container.seek(0, stream=s, backward=True, any_frame=False)
                    self._layout = demux_layout(container, s)
        except av.FFmpegError as e:
            raise DecodeError(f"cannot open: {getattr(e, 'strerror', None) or e}") from e
        except OSError as e:
            raise DecodeError(f"cannot open: {e.strerror or e}") from e
        if refusal:
            raise NvdecUnsupported(refusal)

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        import PyNvVideoCodec as nvc

        # The decoder runs on a stream of ours in CuPy's (primary) context, not on one it makes
        # in a context of its own: its writes, our copies and its next Decode() are ordered there.
        try:
            stream = DecoderStream(self.gpu_id)
            context = _primary_context(self.gpu_id)
        except Exception as e:  # CUDA itself: no file can be decoded here
            raise nvdec_failure(e, self.gpu_id, decoding=False) from e
        try:
            demuxer = nvc.CreateDemuxer(filename=str(self.path))
            decoder = nvc.CreateDecoder(gpuid=self.gpu_id, codec=demuxer.GetNvCodecId(),
                                        cudacontext=context, cudastream=stream.stream.ptr,
                                        usedevicememory=True)
        except Exception as e:  # PyNvVCException*: this GPU or build cannot take the stream
            log.info("%s: NVDEC refused the stream (%s); decoding it with PyAV", self.path.name,
                     str(e).splitlines()[0][:120])
            yield from self._pyav_frames(plan_for)
            return
        driver = _NvdecDriver(demuxer, decoder, self, stream)
        cut = Cut(self.info, self._clock, self.sampling, self.frame_range, self._layout)
        try:
            yield from cut.frames(driver, plan_for)
        except DecodeError:
            if driver.packets:
                raise
            # No packet matched PyAV's pts (nothing was decoded): the demuxers disagree; let PyAV do it all.
            log.info("%s: NVDEC's demuxer found none of the packets to decode; decoding it with PyAV",
                     self.path.name)
            yield from self._pyav_frames(plan_for)

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


class _NvdecDriver:
    """PyNvVideoCodec's demuxer and decoder, fed the packets of ``packets.py``'s policy."""

    name = "NVDEC decoding"
    failures = (NvdecDamage,)  # only damage to the bitstream; a device fault (DeviceError) stops the run

    def __init__(self, demuxer, decoder, source: NvdecSource, stream: DecoderStream) -> None:
        self.demuxer, self.decoder, self.source, self.stream = demuxer, decoder, source, stream
        self.packets = 0
        self.demuxed = Demuxed()  # PyNvVideoCodec's demuxer shows only the video's packets

    def decode(self, feed: Feed) -> Iterator[tuple[int | None, object]]:
        try:
            for packet in packets_to_decode(self.demuxer, _size, _pts, from_pts=feed.seek_pts,
                                            only_pts=feed.key_pts):
                self.packets += bool(packet.bsl)
                for frame in self.decoder.Decode(packet):
                    yield frame.getPTS(), frame
        except DecodeError:
            raise
        except Exception as e:  # classified: damage fails the file, a device fault the run
            raise nvdec_failure(e, self.source.gpu_id) from e

    def keep(self, frame) -> Ready:
        try:
            return self.stream.keep(lambda: _surface_copy(frame))  # the decoder reuses its surfaces
        except Exception as e:  # a copy on the GPU failing is the GPU's fault, never the file's
            raise nvdec_failure(e, self.source.gpu_id, decoding=False) from e

    def is_key(self, frame) -> bool:
        raise NotImplementedError("streams without timestamps are refused (NvdecUnsupported) and go to PyAV")

    def display_hw(self, nv12) -> tuple[int, int]:
        return self.source._display_hw

    def picture(self, nv12: Ready, plan: LetterboxPlan) -> Nv12Picture:
        s = self.source
        return Nv12Picture(nv12, plan, s._colour, s._letterbox, s._turns, self.stream.ops)

    def reason(self, error: BaseException) -> str:
        return str(error)  # NvdecDamage: the decoder's first line already


def _size(packet) -> int:
    return packet.bsl  # PyNvVideoCodec's PacketData: bytes in the packet, 0 at the end of the stream


def _pts(packet) -> int:
    return packet.pts


def _primary_context(device_id: int) -> int:
    """The CUDA context CuPy works in on ``device_id`` (its primary context), for NVDEC."""
    import cupy as cp

    with cp.cuda.Device(device_id):
        context = int(cp.cuda.driver.ctxGetCurrent())
        if not context:  # not made current yet in this thread: a runtime call does it
            cp.cuda.runtime.free(0)
            context = int(cp.cuda.driver.ctxGetCurrent())
    return context


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
