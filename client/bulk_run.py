"""One bulk run: discover, resume, plan, pipeline, write outputs in frame order, report."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .decode import FrameRange, FrameSource
from .decode.pyav_source import PyAVSource
from .discovery import discover
from .infer import Backend
from .pipeline import BatchFailed, FileEnded, FileStarted, FrameResult, Job, Pipeline, PipelineConfig
from .progress import Progress
from .errors import OutputError, OutputStorageError
from .report import ERROR, NOT_PROCESSED, OK, SKIPPED, FileReport
from .outfiles import display_rel
from .resume import NO_RECORD, ResumeLedger, redo_lines
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
    stopped: str | None = None  # why the run stopped before every file was done (None: it finished)
    interrupt: str | None = None  # the signal that stopped it ("SIGINT", "SIGTERM"), if one did


@dataclass
class _FileState:
    plan: FilePlan
    writer: FileWriter | None  # None: its output could not be opened (the file fails)
    started: float
    segments_ended: int = 0
    expected: int = 0  # frames announced by the ended segments
    written: int = 0
    lost: int = 0  # frames of failed batches, or dropped after its output failed
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
        if self.writer is None:
            self.lost += len(self.pending)
            self.pending.clear()
            return
        while self.pending:
            nxt = min(self.pending) if force else self.written + self.lost
            if nxt not in self.pending:
                if not self.lost:
                    return
                nxt = min(self.pending)  # a failed batch left a gap: frames after it keep their order
            r = self.pending.pop(nxt)
            self.writer.write(r.index, r.t_s, r.detections)
            self.written += 1


def run_bulk(options: RunOptions, backend: Backend, sink: Sink, ledger: ResumeLedger,
             telemetry: RunTelemetry | None = None) -> RunResult:
    """Process every video under ``options.root``; never raises for a file's fault.

    An interrupt (SIGINT, SIGTERM) or a fault no file can survive (backend gone, output
    storage unusable, a pipeline bug) stops the run the same way: threads stopped and
    joined, files in flight kept as partial outputs, files not started reported as not
    processed, and a result returned so the caller can still write ``summary.json``.
    """
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
    collector = _Collector(plans, sink, ledger, progress, telemetry, out=options.out, stop=pipeline.stop)
    busy_before = backend.busy_seconds()
    start = time.monotonic()
    with _Interrupts(pipeline.stop) as interrupts:
        pipeline.start(jobs)
        try:
            _collect(pipeline, collector)
        except KeyboardInterrupt:  # a second signal: stop waiting for the batches in flight
            pass
        finally:
            pipeline.close()
            progress.close()
    if interrupts.signal_name is not None:  # the cause, even if a lane gave up waiting first
        collector.stop_run(f"interrupted ({interrupts.signal_name})", cause=True)
    if pipeline.crash is not None:
        collector.stop_run(f"internal error: {pipeline.crash}")
    makespan = time.monotonic() - start
    reports.update(collector.finish_stopped())
    reports.update(collector.reports)
    busy = backend.busy_seconds() - busy_before
    schedule = _schedule_report(config.workers, len(jobs), makespan, busy, backend.lanes, collector.decode_times)
    return RunResult([reports[rel] for rel in sorted(reports)], schedule, collector.stopped, interrupts.signal_name)


class _Interrupts:
    """SIGINT and SIGTERM during a run: the first stops the pipeline, whose stages finish the
    batches in flight, so their results still reach the outputs and nothing is cut mid-write;
    a second one stops waiting (KeyboardInterrupt). Off the main thread signals are left alone."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self._stop()

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _collect(pipeline: Pipeline, collector: "_Collector") -> None:
    """Hand every pipeline event to the collector; a collector failure (a bug) stops the run."""
    try:
        for event in pipeline.events():
            collector.handle(event)
    except Exception as e:
        log.debug("collecting results failed", exc_info=True)
        collector.stop_run(f"internal error: {type(e).__name__}: {e}")
        for _ in pipeline.events():  # let the stopped stages end
            pass


def _triage(options: RunOptions, sink: Sink, ledger: ResumeLedger) -> tuple[dict[str, FileReport], list]:
    """Reports for what needs no work (not videos, unreadable, already complete); the rest to do."""
    found = discover(options.root, follow_links=options.follow_links)
    reports: dict[str, FileReport] = {}
    for c, reason in found.skipped:
        reports[c.rel] = FileReport(c.rel, SKIPPED, error=reason)
    for c, reason in found.errors:
        reports[c.rel] = FileReport(c.rel, ERROR, error=reason)
    todo, verdicts = [], []
    for c in found.videos:
        outputs = sink.outputs(c.rel)
        verdict = ledger.check(c.path, c.rel, outputs)
        if options.overwrite or not verdict.complete:
            todo.append(c)
            verdicts.append(verdict)
        else:
            reports[c.rel] = FileReport(c.rel, OK, frames=verdict.frames, resumed=True,
                                        outputs=[_rel_out(p, options.out) for p in outputs])
    if found.videos and len(todo) < len(found.videos):
        log.info("resuming: %d of %d videos already complete", len(found.videos) - len(todo), len(found.videos))
    if options.overwrite:
        log.info("--overwrite: redoing all %d videos", len(todo))
    else:
        for line in redo_lines(v for v in verdicts if v.reason != NO_RECORD):
            log.info("%s", line)  # say why earlier outputs are replaced
    return reports, todo


class _Collector:
    """Turns the pipeline's events into outputs written in frame order and file reports.

    Runs in the caller's thread: it alone touches the sinks and the resume ledger. An output
    error costs its file; an output storage error (disk full, OUT gone) stops the run.
    """

    def __init__(self, plans: list[FilePlan], sink: Sink, ledger: ResumeLedger, progress: Progress,
                 telemetry: RunTelemetry | None, *, out: Path, stop: Callable[[], None]) -> None:
        self.plans, self.sink, self.ledger, self.out = plans, sink, ledger, out
        self.progress, self.telemetry, self._stop_pipeline = progress, telemetry, stop
        self.states: dict[int, _FileState] = {}
        self.reports: dict[str, FileReport] = {}
        self.decode_times: list[float] = []
        self.stopped: str | None = None

    def handle(self, event) -> None:
        if isinstance(event, FileStarted):
            if event.file_id not in self.states:
                self._start(self.plans[event.file_id])
            return
        if isinstance(event, FrameResult):
            state = self.states[event.file_id]
            state.pending[event.seq] = event
            self._output(state, state.drain)
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
            if event.fatal:
                self.stop_run(event.reason)
            for file_id, n in event.frames_by_file.items():
                state = self.states[file_id]
                state.lost += n
                state.error = state.error or f"inference failed: {event.reason}"
                self._output(state, state.drain)
            touched = list(event.frames_by_file)
        else:
            raise TypeError(f"unknown pipeline event {event!r}")
        for file_id in touched:
            if file_id in self.states and self.states[file_id].done:
                self._report(self._finish(self.states.pop(file_id)))

    def _start(self, p: FilePlan) -> None:
        state = _FileState(p, None, time.monotonic())
        self.states[p.file_id] = state
        try:
            state.writer = self.sink.open(p.candidate.rel)
        except OutputStorageError as e:
            state.error = f"output: {e}"
            self.stop_run(f"cannot write outputs: {e}")
        except OutputError as e:
            state.error = f"output: {e}"

    def _output(self, state: _FileState, action: Callable[[], object]) -> object:
        """Run one output step of a file; its failure fails that file (or, for storage, the run)."""
        if state.writer is None:
            return action()  # nothing to write to: drain only counts what it drops
        try:
            return action()
        except OutputError as e:
            state.error = state.error or f"output: {e}"
            self._abandon(state)
            if isinstance(e, OutputStorageError):
                self.stop_run(f"cannot write outputs: {e}")
        return None

    def _abandon(self, state: _FileState) -> None:
        """After a write failed: drop the file's writer, keeping what it wrote if that can be kept."""
        writer, state.writer = state.writer, None
        state.lost += len(state.pending)
        state.pending.clear()
        try:
            writer.fail()
        except OutputError:
            pass

    def _report(self, report: FileReport) -> None:
        self.reports[report.path] = report
        self.progress.file_done()
        if self.telemetry is not None:
            self.telemetry.file_done(report.status)

    def stop_run(self, reason: str, *, cause: bool = False) -> None:
        """Stop taking work; :meth:`finish_stopped` reports what was in flight and not started.
        The first reason stands unless a later one is known to be the ``cause``."""
        if self.stopped is None or cause:
            self.stopped = reason
            log.error("%s: stopping; files in flight are kept as partial outputs, rerun to resume", reason)
        self._stop_pipeline()

    def finish_stopped(self) -> dict[str, FileReport]:
        """After a stop: files in flight are errors with their partial outputs; files never
        started are reported as not processed. Empty when the run finished."""
        if self.stopped is None:
            return {}
        for state in list(self.states.values()):
            state.error = state.error or f"not finished: {self.stopped}"
            self._output(state, lambda: state.drain(force=True))
            self._report(self._finish(state))
        self.states.clear()
        return {p.candidate.rel: FileReport(p.candidate.rel, NOT_PROCESSED, error=f"not started: {self.stopped}")
                for p in self.plans if p.candidate.rel not in self.reports}

    def _finish(self, state: _FileState) -> FileReport:
        c = state.plan.candidate
        seconds = time.monotonic() - state.started
        segments = sorted(state.segment_times, key=lambda s: s["segment"])
        if not state.error:
            self._output(state, state.drain)
            outputs = self._output(state, state.writer.complete) if not state.error else None
            if not state.error:
                self._output(state, lambda: self.ledger.record(c.path, c.rel, state.written, outputs))
            if not state.error:
                return FileReport(c.rel, OK, frames=state.written, seconds=seconds, segments=segments,
                                  outputs=[_rel_out(o.path, self.out) for o in outputs])
        partial = None
        if state.writer is not None:
            self._output(state, lambda: state.drain(force=True))
        if state.writer is not None:  # still there: the drain did not fail
            partial = self._output(state, state.writer.fail)
        self.ledger.forget(c.rel)
        log.warning("%s: %s", c.rel, state.error)
        return FileReport(c.rel, ERROR, frames=state.written, seconds=seconds, error=state.error,
                          partial_output=_rel_out(partial, self.out) if partial else None, segments=segments)


def _rel_out(path: Path, out: Path) -> str:
    """An output's path relative to OUT, as summary.json lists it (valid UTF-8 text)."""
    return display_rel(path.relative_to(out).as_posix())


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
