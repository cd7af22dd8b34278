"""One bulk run: discover, resume, plan, pipeline, write outputs in frame order, report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .decode import DecodedFrame, FrameRange, FrameSource
from .decode.pyav_source import PyAVSource
from .discovery import discover
from .infer import Backend
from .pipeline import BatchFailed, FileEnded, FileStarted, FrameResult, Job, Pipeline, PipelineConfig
from .progress import Progress
from .report import ERROR, OK, SKIPPED, FileReport
from .resume import ResumeLedger
from .schedule import FilePlan, Segment, lpt_order, plan
from .sinks import FileWriter, Sink
from .telemetry import RunTelemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    root: Path
    out: Path
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    overwrite: bool = False
    split: bool = True  # cut long files into segments at key frames
    progress: bool | None = None  # None: live bar when stderr is a terminal


@dataclass
class RunResult:
    files: list[FileReport]
    schedule: dict[str, object]


@dataclass
class _FileState:
    plan: FilePlan
    writer: FileWriter
    started: float
    segments_ended: int = 0
    expected: int = 0  # frames announced by the ended segments
    written: int = 0
    lost: int = 0  # frames of failed batches
    error: str | None = None
    pending: dict[int, FrameResult] = field(default_factory=dict)  # reorder buffer by seq
    segment_times: list[dict[str, object]] = field(default_factory=list)

    @property
    def segments_total(self) -> int:
        return len(self.plan.segments) or 1

    @property
    def done(self) -> bool:
        return self.segments_ended == self.segments_total and self.written + self.lost + len(self.pending) >= self.expected

    def drain(self, force: bool = False) -> None:
        """Write buffered results in frame order; ``force`` writes across gaps left by failures."""
        while self.pending:
            nxt = min(self.pending) if force else self.written + self.lost
            if nxt not in self.pending:
                if not self.lost:
                    return
                nxt = min(self.pending)  # a failed batch left a gap: frames after it keep their order
            r = self.pending.pop(nxt)
            self.writer.write(r.index, r.t, r.detections)
            self.written += 1


def run_bulk(options: RunOptions, backend: Backend, sink: Sink, ledger: ResumeLedger,
             telemetry: RunTelemetry | None = None) -> RunResult:
    found = discover(options.root)
    reports: dict[str, FileReport] = {}
    for c, reason in found.skipped:
        reports[c.rel] = FileReport(c.rel, SKIPPED, error=reason)
    for c, reason in found.errors:
        reports[c.rel] = FileReport(c.rel, ERROR, error=reason)
    todo = []
    for c in found.videos:
        frames = None if options.overwrite else ledger.completed_frames(c.path, c.rel, sink.outputs(c.rel))
        if frames is None:
            todo.append(c)
        else:
            reports[c.rel] = FileReport(c.rel, OK, frames=frames, resumed=True)
    if found.videos and len(todo) < len(found.videos):
        log.info("resuming: %d of %d videos already complete", len(found.videos) - len(todo), len(found.videos))

    config = options.pipeline
    split_files = options.split and not config.gpu
    if options.split and config.gpu:
        log.info("key-frame splitting is off on the GPU path: NVDEC decodes whole files here")
    plans = plan(todo, config.sampling, workers=config.workers, split=split_files)
    units = lpt_order(plans)
    split = [p for p in plans if p.split]
    if split:
        log.info("split %d long video(s) into %d segments at key frames", len(split), sum(len(p.segments) for p in split))
    progress = Progress(files=len(plans), frames_estimate=sum(p.work for p in plans), live=options.progress)
    pipeline = Pipeline(backend, config)
    if telemetry is not None:
        in_flight = getattr(backend, "in_flight", None)
        telemetry.watch(queue_depths=pipeline.queue_depths, inflight=lambda: in_flight.now if in_flight else 0)
    ranges = {p.file_id: _ranges(p) for p in split}
    letterbox = _gpu_letterbox() if config.gpu else None
    jobs = [_job(p, s, config, ranges.get(p.file_id), letterbox) for p, s in units]
    states: dict[int, _FileState] = {}
    segment_times: list[float] = []
    fatal: str | None = None
    busy_before = backend.busy_seconds()
    start = time.monotonic()
    events = pipeline.run(jobs)
    try:
        for event in events:
            if isinstance(event, FileStarted):
                if event.file_id not in states:
                    p = plans[event.file_id]
                    states[event.file_id] = _FileState(p, sink.open(p.candidate.rel), time.monotonic())
                continue
            state = states[event.file_id] if not isinstance(event, BatchFailed) else None
            if isinstance(event, FrameResult):
                state.pending[event.seq] = event
                state.drain()
                progress.frame()
                if telemetry is not None:
                    telemetry.frame()
            elif isinstance(event, FileEnded):
                state.segments_ended += 1
                state.expected += event.frames
                state.error = state.error or event.error
                state.segment_times.append({"segment": event.segment, "frames": event.frames,
                                            "seconds": round(event.wall_s, 3), "decode_seconds": round(event.decode_s, 3)})
                segment_times.append(event.decode_s)
            elif isinstance(event, BatchFailed):
                if event.fatal and fatal is None:
                    fatal = event.reason
                    log.error("%s: stopping; files in flight are marked failed, rerun to resume", fatal)
                    pipeline.stop()
                for file_id, n in event.frames_by_file.items():
                    states[file_id].lost += n
                    states[file_id].error = states[file_id].error or f"inference failed: {event.reason}"
                    states[file_id].drain()
            ids = event.frames_by_file.keys() if isinstance(event, BatchFailed) else [event.file_id]
            for file_id in [i for i in ids if i in states and states[i].done]:
                report = _finish(states.pop(file_id), ledger)
                reports[report.path] = report
                progress.file_done()
                if telemetry is not None:
                    telemetry.file_done(report.status)
    except BaseException:
        pipeline.stop()
        for state in states.values():  # interrupted: keep what we have as partial outputs
            state.drain(force=True)
            state.writer.fail()
        raise
    finally:
        events.close()
        progress.close()
    makespan = time.monotonic() - start
    if fatal is not None:
        for state in list(states.values()):  # started, not finished
            state.error = state.error or f"interrupted: {fatal}"
            reports[state.plan.candidate.rel] = _finish(state, ledger)
        for p in plans:
            reports.setdefault(p.candidate.rel, FileReport(p.candidate.rel, ERROR, error=f"not processed: {fatal}"))
    busy = backend.busy_seconds() - busy_before
    schedule = _schedule_report(config.workers, len(jobs), makespan, busy, backend.lanes, segment_times)
    return RunResult([reports[rel] for rel in sorted(reports)], schedule)


def _schedule_report(workers: int, segments: int, makespan: float, busy: float, lanes: int,
                     decode_times: list[float]) -> dict[str, object]:
    """How close the run came to its lower bound.

    work_s is the inference time if the backend's lanes were never idle (busy time / lanes);
    no schedule beats it, nor the longest segment's decoding, which is serial. So the lower
    bound is the larger of the two, and efficiency = lower bound / makespan.
    """
    work_s = busy / lanes if lanes else 0.0
    lower = max([work_s, *decode_times]) if decode_times else work_s
    return {
        "workers": workers,
        "segments": segments,
        "makespan_s": round(makespan, 3),
        "work_s": round(work_s, 3),
        "lower_bound_s": round(lower, 3),
        "efficiency": round(lower / makespan, 3) if makespan > 0 else 0.0,
        "busy_fraction": round(busy / (lanes * makespan), 3) if makespan > 0 and lanes else 0.0,
    }


def _finish(state: _FileState, ledger: ResumeLedger) -> FileReport:
    c = state.plan.candidate
    seconds = time.monotonic() - state.started
    segments = sorted(state.segment_times, key=lambda s: s["segment"])
    if state.error:
        state.drain(force=True)
        partial = state.writer.fail()
        ledger.forget(c.rel)
        log.warning("%s: %s", c.rel, state.error)
        return FileReport(c.rel, ERROR, frames=state.written, seconds=seconds, error=state.error,
                          partial_output=str(partial) if partial else None, segments=segments)
    state.drain()
    outputs = state.writer.complete()
    ledger.record(c.path, c.rel, state.written, outputs)
    return FileReport(c.rel, OK, frames=state.written, seconds=seconds, segments=segments)


def _ranges(p: FilePlan) -> tuple[dict[int, int], dict[int, int]]:
    """A split file's maps, built once and shared by its segments: pts -> index, index -> seq."""
    index_of_pts = {pts: i for i, pts in enumerate(p.layout.pts)}
    seq_of = {index: seq for seq, index in enumerate(p.selected)}
    return index_of_pts, seq_of


def _job(p: FilePlan, segment: Segment | None, config: PipelineConfig,
         maps: tuple[dict[int, int], dict[int, int]] | None, letterbox) -> Job:
    path, sampling, threads = p.candidate.path, config.sampling, config.decode_threads
    if segment is None:
        def cpu() -> FrameSource:
            return PyAVSource(path, sampling=sampling, threads=threads)
        return Job(p.file_id, cpu if letterbox is None else lambda: _open_gpu(p, sampling, letterbox, cpu))
    index_of_pts, seq_of = maps
    frame_range = FrameRange(segment.start, segment.end, segment.seek_pts, frozenset(p.selected), index_of_pts)
    return Job(p.file_id, lambda: PyAVSource(path, sampling=sampling, threads=threads, frame_range=frame_range),
               segment=segment.seg_id, seq_of=seq_of)


def _gpu_letterbox():
    from .gpu.letterbox import GpuLetterbox

    return GpuLetterbox()


def _open_gpu(p: FilePlan, sampling, letterbox, cpu) -> FrameSource:
    """NVDEC for the file, or PyAV with its frames uploaded (batches never mix host and device)."""
    from .decode.nvdec_source import NvdecSource, NvdecUnsupported

    try:
        return NvdecSource(p.candidate.path, sampling=sampling, letterbox=letterbox)
    except NvdecUnsupported as e:
        log.info("%s: %s; decoding it with PyAV", p.candidate.rel, e)
        return _Uploaded(cpu())


class _Uploaded:
    """A CPU frame source whose letterboxed frames are copied to the GPU."""

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self.path = source.path

    def frames(self, plan_for):
        import cupy as cp

        for f in self._source.frames(plan_for):
            yield DecodedFrame(f.index, f.t, cp.asarray(f.image), f.plan)

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "_Uploaded":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RunOptions", "RunResult", "run_bulk"]
