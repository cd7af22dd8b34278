"""Pipeline jobs from the plan: one per whole file or segment, each opening its frame source.

A split file's segments share maps built once per file (which frames to infer, where each
lands in the file's output), so every frame is inferred exactly once across boundaries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .decode import FrameRange, FrameSource
from .decode.pyav_source import PyAVSource
from .pipeline import Job, PipelineConfig
from .schedule import FilePlan, Segment, lpt_order

log = logging.getLogger(__name__)

__all__ = ["SplitMaps", "split_maps", "make_job", "build_jobs", "gpu_letterbox"]


def build_jobs(plans: list[FilePlan], config: PipelineConfig) -> list[Job]:
    """Every unit of work, longest first, decoded by NVDEC on the GPU path."""
    maps = {p.file_id: split_maps(p) for p in plans if p.split}
    letterbox = gpu_letterbox() if config.gpu else None
    return [make_job(p, s, config, maps.get(p.file_id), letterbox) for p, s in lpt_order(plans)]


@dataclass(frozen=True)
class SplitMaps:
    """What a split file's segments share, built once per file."""

    index_of_pts: dict[int, int]
    seq_of: dict[int, int]  # frame index -> position in the file's output
    selected: frozenset[int]


def split_maps(p: FilePlan) -> SplitMaps:
    """A split file's maps, from its planning demux pass."""
    return SplitMaps(
        index_of_pts={pts: i for i, pts in enumerate(p.layout.pts)},
        seq_of={index: seq for seq, index in enumerate(p.selected)},
        selected=frozenset(p.selected),
    )


def make_job(p: FilePlan, segment: Segment | None, config: PipelineConfig, maps: SplitMaps | None, letterbox) -> Job:
    """A job for the whole file or one segment, decoded by NVDEC when ``letterbox`` (the GPU path)."""
    path, sampling, threads = p.candidate.path, config.sampling, config.decode_threads
    frame_range = None
    if segment is not None:
        frame_range = FrameRange(segment.start, segment.end, segment.seek_pts, maps.selected, maps.index_of_pts,
                                 expected=segment.work, discarded=p.layout.discarded)

    def cpu() -> FrameSource:
        return PyAVSource(path, sampling=sampling, threads=threads, frame_range=frame_range)

    def gpu() -> FrameSource:
        return _open_gpu(p, sampling, letterbox, frame_range, cpu, config.gpu_device)

    open_source = cpu if letterbox is None else gpu
    if segment is None:
        return Job(p.file_id, open_source)
    return Job(p.file_id, open_source, segment=segment.seg_id, seq_of=maps.seq_of)


def gpu_letterbox():
    """The CUDA letterbox, imported only on the GPU path (CuPy); a Ray node's worker makes its own."""
    from .gpu.letterbox import GpuLetterbox

    return GpuLetterbox()


def _open_gpu(p: FilePlan, sampling, letterbox, frame_range: FrameRange | None, cpu, device: int) -> FrameSource:
    """NVDEC for the job, or PyAV (its frames are uploaded into their slots of the GPU batch)."""
    from .decode.nvdec_source import NvdecSource, NvdecUnsupported

    try:
        return NvdecSource(p.candidate.path, sampling=sampling, letterbox=letterbox, gpu_id=device,
                           frame_range=frame_range)
    except NvdecUnsupported as e:
        if frame_range is None or frame_range.start == 0:  # one line per file
            log.info("%s: %s; decoding it with PyAV", p.candidate.rel, e)
        return cpu()
