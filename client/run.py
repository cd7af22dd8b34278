"""One bulk run: discover, resume, pipeline, write outputs in frame order, report."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .decode import Sampling
from .decode.pyav_source import PyAVSource
from .discovery import Candidate, discover
from .infer import Backend
from .pipeline import BatchFailed, FileEnded, FileStarted, FrameResult, Job, Pipeline, PipelineConfig
from .progress import Progress
from .report import ERROR, OK, SKIPPED, FileReport, totals
from .resume import ResumeLedger
from .sinks import FileWriter, Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    root: Path
    out: Path
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    overwrite: bool = False
    progress: bool | None = None  # None: live bar when stderr is a terminal


@dataclass
class _FileState:
    candidate: Candidate
    writer: FileWriter
    started: float
    expected: int | None = None  # known once the decoder is done with the file
    written: int = 0
    lost: int = 0  # frames of failed batches
    error: str | None = None
    pending: dict[int, FrameResult] = field(default_factory=dict)  # reorder buffer by seq

    @property
    def done(self) -> bool:
        return self.expected is not None and self.written + self.lost + len(self.pending) >= self.expected

    def drain(self) -> None:
        """Write buffered results whose turn has come; with a gap left by a failed batch, all."""
        nxt = self.written + self.lost
        while nxt in self.pending or (self.lost and self.pending):
            seq = nxt if nxt in self.pending else min(self.pending)
            r = self.pending.pop(seq)
            self.writer.write(r.index, r.t, r.detections)
            self.written += 1
            nxt = self.written + self.lost


def expected_frames(candidate: Candidate, sampling: Sampling) -> int:
    if sampling.fps is not None:
        return math.floor(candidate.duration_s * sampling.fps) + 1 if candidate.duration_s else 0
    if sampling.keyframes:
        return 0
    return math.ceil(candidate.frames / sampling.every)


def run_bulk(options: RunOptions, backend: Backend, sink: Sink, ledger: ResumeLedger) -> list[FileReport]:
    found = discover(options.root)
    reports: dict[str, FileReport] = {}
    for c, reason in found.skipped:
        reports[c.rel] = FileReport(c.rel, SKIPPED, error=reason)
    for c, reason in found.errors:
        reports[c.rel] = FileReport(c.rel, ERROR, error=reason)
    todo: list[Candidate] = []
    for c in found.videos:
        frames = None if options.overwrite else ledger.completed_frames(c.path, c.rel, sink.outputs(c.rel))
        if frames is None:
            todo.append(c)
        else:
            reports[c.rel] = FileReport(c.rel, OK, frames=frames, resumed=True)
    if found.videos and len(todo) < len(found.videos):
        log.info("resuming: %d of %d videos already complete", len(found.videos) - len(todo), len(found.videos))

    sampling = options.pipeline.sampling
    # Longest first: a long file started last would bound the run's end.
    todo.sort(key=lambda c: (-c.frames, c.rel))
    progress = Progress(
        files=len(todo), frames_estimate=sum(expected_frames(c, sampling) for c in todo), live=options.progress
    )
    pipeline = Pipeline(backend, options.pipeline)
    jobs = [Job(i, _opener(c, options.pipeline)) for i, c in enumerate(todo)]
    states: dict[int, _FileState] = {}
    fatal: str | None = None
    events = pipeline.run(jobs)
    try:
        for event in events:
            if isinstance(event, FileStarted):
                c = todo[event.file_id]
                states[event.file_id] = _FileState(c, sink.open(c.rel), time.monotonic())
                continue
            if isinstance(event, FrameResult):
                state = states[event.file_id]
                state.pending[event.seq] = event
                state.drain()
                progress.frame()
            elif isinstance(event, FileEnded):
                state = states[event.file_id]
                state.expected = event.frames
                state.error = state.error or event.error
            elif isinstance(event, BatchFailed):
                if event.fatal and fatal is None:
                    fatal = event.reason
                    log.error("%s: stopping; files in flight are marked failed, rerun to resume", fatal)
                    pipeline.stop()
                for file_id, n in event.frames_by_file.items():
                    states[file_id].lost += n
                    states[file_id].error = states[file_id].error or f"inference failed: {event.reason}"
                    states[file_id].drain()
            for file_id in _finished(states, event):
                reports[todo[file_id].rel] = _finish(states.pop(file_id), ledger, sink)
                progress.file_done()
    except BaseException:
        pipeline.stop()
        for state in states.values():  # interrupted: keep what we have as partial outputs
            state.drain()
            state.writer.fail()
        raise
    finally:
        events.close()
        progress.close()
    if fatal is not None:
        for file_id, state in list(states.items()):  # started, not finished
            state.error = state.error or f"interrupted: {fatal}"
            state.expected = state.written
            reports[todo[file_id].rel] = _finish(states.pop(file_id), ledger, sink)
        for c in todo:
            reports.setdefault(c.rel, FileReport(c.rel, ERROR, error=f"not processed: {fatal}"))
    return [reports[rel] for rel in sorted(reports)]


def _finished(states: dict[int, _FileState], event: object) -> list[int]:
    ids = event.frames_by_file.keys() if isinstance(event, BatchFailed) else [event.file_id]
    return [i for i in ids if i in states and states[i].done]


def _finish(state: _FileState, ledger: ResumeLedger, sink: Sink) -> FileReport:
    state.drain()
    c = state.candidate
    seconds = time.monotonic() - state.started
    if state.error:
        partial = state.writer.fail()
        ledger.forget(c.rel)
        log.warning("%s: %s", c.rel, state.error)
        return FileReport(c.rel, ERROR, frames=state.written, seconds=seconds, error=state.error,
                          partial_output=str(partial) if partial else None)
    outputs = state.writer.complete()
    ledger.record(c.path, c.rel, state.written, outputs)
    return FileReport(c.rel, OK, frames=state.written, seconds=seconds)


def _opener(c: Candidate, config: PipelineConfig):
    return lambda: PyAVSource(c.path, sampling=config.sampling, threads=config.decode_threads)


__all__ = ["RunOptions", "run_bulk", "expected_frames"]
