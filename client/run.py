"""One bulk run: discover, resume, plan, pipeline, write outputs in frame order, report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .decode import FrameRange, FrameSource
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
    follow_links: bool = False  # follow directory symlinks that lead out of root


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
    reports, todo = _triage(options, sink, ledger)
    config = options.pipeline
    plans = plan(todo, config.sampling, workers=config.workers, split=options.split)
    split_plans = [p for p in plans if p.split]
    if split_plans:
        log.info("split %d long video(s) into %d segments at key frames", len(split_plans),
                 sum(len(p.segments) for p in split_plans))
    ranges = {p.file_id: _ranges(p) for p in split_plans}
    letterbox = _gpu_letterbox() if config.gpu else None
    jobs = [_job(p, s, config, ranges.get(p.file_id), letterbox) for p, s in lpt_order(plans)]

    progress = Progress(files=len(plans), frames_estimate=sum(p.work for p in plans), live=options.progress)
    pipeline = Pipeline(backend, config)
    if telemetry is not None:
        in_flight = getattr(backend, "in_flight", None)
        telemetry.watch(queue_depths=pipeline.queue_depths, inflight=lambda: in_flight.now if in_flight else 0)
    collector = _Collector(plans, sink, ledger, progress, telemetry, stop=pipeline.stop)
    busy_before = backend.busy_seconds()
    start = time.monotonic()
    events = pipeline.run(jobs)
    try:
        for event in events:
            collector.handle(event)
    except BaseException:
        pipeline.stop()
        collector.keep_partials()
        raise
    finally:
        events.close()
        progress.close()
    makespan = time.monotonic() - start
    reports.update(collector.finish_after_fatal())
    reports.update(collector.reports)
    busy = backend.busy_seconds() - busy_before
    schedule = _schedule_report(config.workers, len(jobs), makespan, busy, backend.lanes, collector.decode_times)
    return RunResult([reports[rel] for rel in sorted(reports)], schedule)


def _triage(options: RunOptions, sink: Sink, ledger: ResumeLedger) -> tuple[dict[str, FileReport], list]:
    """Reports for what needs no work (not videos, unreadable, already complete); the rest to do."""
    found = discover(options.root, follow_links=options.follow_links)
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
    return reports, todo


class _Collector:
    """Turns the pipeline's events into outputs written in frame order and file reports.

    Runs in the caller's thread: it alone touches the sinks and the resume ledger.
    """

    def __init__(self, plans: list[FilePlan], sink: Sink, ledger: ResumeLedger, progress: Progress,
                 telemetry: RunTelemetry | None, *, stop) -> None:
        self.plans, self.sink, self.ledger = plans, sink, ledger
        self.progress, self.telemetry, self.stop = progress, telemetry, stop
        self.states: dict[int, _FileState] = {}
        self.reports: dict[str, FileReport] = {}
        self.decode_times: list[float] = []
        self.fatal: str | None = None

    def handle(self, event) -> None:
        if isinstance(event, FileStarted):
            if event.file_id not in self.states:
                p = self.plans[event.file_id]
                self.states[event.file_id] = _FileState(p, self.sink.open(p.candidate.rel), time.monotonic())
            return
        if isinstance(event, FrameResult):
            state = self.states[event.file_id]
            state.pending[event.seq] = event
            state.drain()
            self.progress.frame()
            if self.telemetry is not None:
                self.telemetry.frame()
            touched = [event.file_id]
        elif isinstance(event, FileEnded):
            state = self.states[event.file_id]
            state.segments_ended += 1
            state.expected += event.frames
            state.error = state.error or event.error
            state.segment_times.append({"segment": event.segment, "frames": event.frames,
                                        "seconds": round(event.wall_s, 3), "decode_seconds": round(event.decode_s, 3)})
            self.decode_times.append(event.decode_s)
            touched = [event.file_id]
        elif isinstance(event, BatchFailed):
            if event.fatal and self.fatal is None:
                self.fatal = event.reason
                log.error("%s: stopping; files in flight are marked failed, rerun to resume", self.fatal)
                self.stop()
            for file_id, n in event.frames_by_file.items():
                state = self.states[file_id]
                state.lost += n
                state.error = state.error or f"inference failed: {event.reason}"
                state.drain()
            touched = list(event.frames_by_file)
        else:
            raise TypeError(f"unknown pipeline event {event!r}")
        for file_id in touched:
            if file_id in self.states and self.states[file_id].done:
                self._report(_finish(self.states.pop(file_id), self.ledger))

    def _report(self, report: FileReport) -> None:
        self.reports[report.path] = report
        self.progress.file_done()
        if self.telemetry is not None:
            self.telemetry.file_done(report.status)

    def keep_partials(self) -> None:
        """Interrupted: what each open file has so far becomes its partial output."""
        for state in self.states.values():
            state.drain(force=True)
            state.writer.fail()

    def finish_after_fatal(self) -> dict[str, FileReport]:
        """After the backend was lost: files in flight and files never started are errors."""
        if self.fatal is None:
            return {}
        for state in list(self.states.values()):
            state.error = state.error or f"interrupted: {self.fatal}"
            self._report(_finish(state, self.ledger))
        self.states.clear()
        return {p.candidate.rel: FileReport(p.candidate.rel, ERROR, error=f"not processed: {self.fatal}")
                for p in self.plans if p.candidate.rel not in self.reports}


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


@dataclass(frozen=True)
class _SplitMaps:
    """What a split file's segments share, built once per file."""

    index_of_pts: dict[int, int]
    seq_of: dict[int, int]  # frame index -> position in the file's output
    selected: frozenset[int]


def _ranges(p: FilePlan) -> _SplitMaps:
    return _SplitMaps(
        index_of_pts={pts: i for i, pts in enumerate(p.layout.pts)},
        seq_of={index: seq for seq, index in enumerate(p.selected)},
        selected=frozenset(p.selected),
    )


def _job(p: FilePlan, segment: Segment | None, config: PipelineConfig, maps: _SplitMaps | None, letterbox) -> Job:
    """A job for the whole file or one segment, decoded by NVDEC when ``letterbox`` (the GPU path)."""
    path, sampling, threads = p.candidate.path, config.sampling, config.decode_threads
    frame_range = None
    if segment is not None:
        frame_range = FrameRange(segment.start, segment.end, segment.seek_pts, maps.selected, maps.index_of_pts,
                                 expected=segment.work)

    def cpu() -> FrameSource:
        return PyAVSource(path, sampling=sampling, threads=threads, frame_range=frame_range)

    def gpu() -> FrameSource:
        return _open_gpu(p, sampling, letterbox, frame_range, cpu)

    open_source = cpu if letterbox is None else gpu
    if segment is None:
        return Job(p.file_id, open_source)
    return Job(p.file_id, open_source, segment=segment.seg_id, seq_of=maps.seq_of)


def _gpu_letterbox():
    from .gpu.letterbox import GpuLetterbox

    return GpuLetterbox()


def _open_gpu(p: FilePlan, sampling, letterbox, frame_range: FrameRange | None, cpu) -> FrameSource:
    """NVDEC for the job, or PyAV (its frames are uploaded into their slots of the GPU batch)."""
    from .decode.nvdec_source import NvdecSource, NvdecUnsupported

    try:
        return NvdecSource(p.candidate.path, sampling=sampling, letterbox=letterbox, frame_range=frame_range)
    except NvdecUnsupported as e:
        if frame_range is None or frame_range.start == 0:  # one line per file
            log.info("%s: %s; decoding it with PyAV", p.candidate.rel, e)
        return cpu()


__all__ = ["RunOptions", "RunResult", "run_bulk"]
