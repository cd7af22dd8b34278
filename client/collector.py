"""The run's one writer: pipeline events in, outputs in frame order and file reports out.

A file's results arrive out of order (batches, lanes and segments overlap); each file's are
buffered until they can be written in frame order.
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import OutputError, OutputStorageError, PostProcessingError
from .partials import PARTIAL_DISAGREES, Partials
from .outfiles import summary_rel
from .pipeline import BatchFailed, FileEnded, FileStarted, FrameResult
from .progress import Progress
from .report import ERROR, NOT_PROCESSED, OK, FileReport, named_counts
from .resume import ResumeLedger, SourceIdentity
from .letterbox import LetterboxPlan
from .schedule import FilePlan
from .sidecar import Sidecars, letterbox_text
from .sinks import FileWriter, PartialMismatch, Sink, Stage
from .telemetry import RunTelemetry

log = logging.getLogger(__name__)

__all__ = ["Collector"]


@dataclass(frozen=True)
class _Carried:
    """A frame's line kept from an earlier run (a complete segment past its partial's prefix)."""

    line: bytes


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
    pending: dict[int, FrameResult | _Carried] = field(default_factory=dict)  # reorder buffer by seq
    segment_times: list[dict[str, object]] = field(default_factory=list)
    letterbox: LetterboxPlan | None = None  # the model input its frames got
    sealed: bool = False  # a post-processing step failed: nothing more is written, what was is the partial
    source: SourceIdentity | None = None  # the source as it was when its decoding started
    partial: Path | None = None  # its partial output, once its writer failed
    kept: int = 0  # frames carried over from the partial output it continues
    abandoned: bool = False  # its partial disagreed: redone from frame 0 as another file id, this one dropped
    ended_ok: set[int] = field(default_factory=set)  # segments whose decoding ended without an error
    beyond: list[tuple[int, int, list[bytes]]] = field(default_factory=list)  # complete segments past a stop's prefix

    @property
    def segments_total(self) -> int:
        return len(self.plan.segments) or 1

    @property
    def done(self) -> bool:
        return self.segments_ended == self.segments_total and self.written + self.lost + len(self.pending) >= self.expected

    def drain(self, force: bool = False, *, prefix: bool = False) -> None:
        """Write buffered results in frame order; ``force`` writes across gaps left by failures;
        ``prefix`` writes only up to the first frame not here (a stopped run's partial output is
        a gap-free prefix, even when a later segment of a split file had results already)."""
        if self.writer is None or self.sealed:
            self.lost += len(self.pending)
            self.pending.clear()
            return
        while self.pending:
            nxt = min(self.pending) if force else self.written + self.lost
            if nxt not in self.pending:
                if not self.lost or prefix:
                    return
                nxt = min(self.pending)  # a failed batch left a gap: frames after it keep their order
            r = self.pending.pop(nxt)
            try:
                if isinstance(r, _Carried):
                    self.writer.write_line(r.line)
                else:
                    self.writer.write(r.index, r.t_s, r.detections)
            except BaseException:  # counted, so the file still ends (as an error) and is reported
                self.lost += 1
                raise
            self.written += 1


class Collector:
    """Turns the pipeline's events into outputs written in frame order and file reports.

    Runs in the caller's thread: it alone touches the sinks and the resume ledger. An output
    error costs its file; an output storage error (disk full, OUT gone) stops the run.
    """

    def __init__(self, plans: list[FilePlan], sink: Sink, ledger: ResumeLedger, progress: Progress,
                 telemetry: RunTelemetry | None, *, out: Path, stop: Callable[[], None],
                 sidecars: Sidecars | None = None, partials: Partials | None = None,
                 requeue: Callable[[FilePlan], None] | None = None, settled: Callable[[], None] | None = None) -> None:
        """``partials``: records the partial outputs of failed videos (None: none is recorded).
        Plans that continue a partial need ``requeue`` (a job for a plan, to redo a video from 0
        whose partial disagrees) and ``settled`` (called once no such video can need it any more)."""
        self.plans, self.sink, self.ledger, self.out, self.sidecars = plans, sink, ledger, out, sidecars
        self.partials, self._requeue, self._settled = partials, requeue, settled
        self._unverified = {p.file_id for p in plans if p.kept is not None}  # may yet be redone from 0
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
            state.letterbox = state.letterbox or event.letterbox
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
            if event.error is None:
                state.ended_ok.add(event.segment)
            state.segment_times.append({"segment": event.segment, "frames": event.frames,
                                        "seconds": round(event.wall_s, 3), "decode_seconds": round(event.decode_s, 3),
                                        "decoder": event.decoder, "start_seconds": round(event.start_s, 3)})
            self.decode_times.append(event.decode_s)
            if event.fatal:  # the device failed, not this file: every later file would too
                self.stop_run(event.error or "the device failed")
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
                self._close(self.states.pop(file_id))
            self._settle(file_id)

    def _settle(self, file_id: int) -> None:
        """A continued video past its old prefix (or ended) can no longer be redone from 0; once
        none can, the pipeline is told no job will be added."""
        if file_id not in self._unverified:
            return
        state = self.states.get(file_id)
        if state is not None and not state.abandoned and state.writer is not None and not state.error:
            if state.written < len(state.plan.kept.lines):
                return
        self._unverified.discard(file_id)
        if not self._unverified and self._settled is not None:
            self._settled()

    def _start(self, p: FilePlan) -> None:
        state = _FileState(p, None, time.monotonic())
        self.states[p.file_id] = state
        try:  # FileStarted is sent as its first decoder opens the file: compared again at the end
            state.source = SourceIdentity.of(p.candidate.path)
        except OSError:
            pass  # gone already: its decoding fails, and the end's comparison says so
        try:
            state.writer = self.sink.open(p.candidate.rel)
        except OutputStorageError as e:
            state.error = f"output: {e}"
            self.stop_run(f"cannot write outputs: {e}")
        except OutputError as e:
            state.error = f"output: {e}"
        if p.kept is not None:  # its first frames come from its partial output, not from a job
            state.expected = p.keep
            for seg in p.kept.segments:  # complete segments kept: written in their turn, not inferred
                for index, line in zip(seg.frames, seg.lines):
                    state.pending[bisect.bisect_left(p.selected, index)] = _Carried(line)
                state.expected += len(seg.lines)
            if state.writer is not None:
                kept = p.kept
                self._output(state, lambda: state.writer.carry(kept.lines, kept.frames, p.keep, kept.class_counts(p.keep)))
            if state.writer is not None:
                state.written = p.keep
            else:
                state.lost += p.keep
            state.kept = p.kept_frames  # the prefix's frames before its last key frame, and the segments kept

    def _output(self, state: _FileState, action: Callable[[], object]) -> object:
        """Run one output step of a file (post-processing and writing, publishing, the resume
        record); its failure fails that file, or for storage the run."""
        try:
            return action()
        except PartialMismatch as e:
            self._disagrees(state, e)
        except PostProcessingError as e:  # its writer is sound: what it wrote so far becomes the partial
            state.error = state.error or str(e)
            state.sealed = True
            state.drain()  # drops what is buffered
        except OutputError as e:
            state.error = state.error or f"output: {e}"
            if state.writer is not None:
                self._abandon(state)
            if isinstance(e, OutputStorageError):
                self.stop_run(f"cannot write outputs: {e}")
        return None

    def _disagrees(self, state: _FileState, e: PartialMismatch) -> None:
        """A frame inferred again disagrees with the partial output being continued: the partial
        is not trusted (its record goes), and the video is redone from frame 0 as a new job (or,
        where no job can be added now, fails, to be redone by the next run)."""
        rel = state.plan.candidate.rel
        writer, state.writer = state.writer, None
        state.lost += len(state.pending)
        state.pending.clear()
        if writer is not None:
            writer.discard()
        if self.partials is not None:
            self.partials.forget(rel)
        if state.error is None and self._requeue is not None and state.plan.file_id in self._unverified:
            log.info("redoing 1 video from frame 0: %s (%s: %s)", PARTIAL_DISAGREES, rel, e)
            state.abandoned = True
            p = state.plan
            fresh = FilePlan(len(self.plans), p.candidate, p.work + p.keep)
            self.plans.append(fresh)
            self._requeue(fresh)
        else:
            state.error = state.error or f"output: {PARTIAL_DISAGREES} ({e}); rerun to redo it from frame 0"

    def _abandon(self, state: _FileState) -> None:
        """After a write failed: drop the file's writer, keeping what it wrote if that can be kept."""
        writer, state.writer = state.writer, None
        state.lost += len(state.pending)
        state.pending.clear()
        try:
            state.partial = writer.fail()
        except OutputError:
            pass

    def _report(self, report: FileReport, *, planned: int) -> None:
        self.reports[report.path] = report
        # Progress counts the frames inferred now: those a continued video kept are in neither.
        self.progress.file_done(report.status, frames=report.frames - report.frames_kept, planned=planned)
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
        if self.stopped is None and not self.states:
            return {}
        # Files left in flight by a run that ended unstopped would be a bug: still reported.
        reason = self.stopped or "internal error: not every result of the file arrived"
        for state in list(self.states.values()):
            if state.abandoned:
                continue
            state.error = state.error or f"not finished: {reason}"
            self._output(state, lambda s=state: s.drain(prefix=True))
            if self.partials is not None and self.partials.continuable:
                state.beyond = self._output(state, lambda s=state: self._whole_segments(s)) or []
            state.lost += len(state.pending)  # after the first missing frame (a later segment's): dropped
            state.pending.clear()
            self._close(state)
        self.states.clear()
        return {p.candidate.rel: FileReport(p.candidate.rel, NOT_PROCESSED, error=f"not started: {reason}")
                for p in self.plans if p.candidate.rel not in self.reports}

    def _close(self, state: _FileState) -> None:
        """Report a file that ended, unless it was handed over to a redo from frame 0."""
        if not state.abandoned:
            report = self._finish(state)
            if report is not None:
                self._report(report, planned=state.plan.work)

    def _finish(self, state: _FileState) -> FileReport | None:
        """Publish a finished file's output with its sidecar and record, or keep its frames as the
        partial output; either way an earlier run's complete output is replaced only by a new one
        that is complete and recorded (:meth:`client.sinks.FileWriter.complete`)."""
        c = state.plan.candidate
        seconds = time.monotonic() - state.started
        segments = sorted(state.segment_times, key=lambda s: s["segment"])
        letterbox = letterbox_text(state.letterbox)
        if not state.error:
            self._output(state, state.drain)
        if state.abandoned:  # its partial disagreed: redone as another file id, which reports
            return None
        if not state.error:
            state.error = self._source_change(state)
        if not state.error:
            detections = self._detections(state)  # every frame is written: what its output holds
            outputs = self._output(state, lambda: state.writer.complete(self._stages(state, detections)))
            if not state.error:
                if self.partials is not None:
                    self.partials.forget(c.rel)  # its partial output went with the publishing
                meta = self.sidecars.path(c.rel) if self.sidecars is not None else None
                return FileReport(c.rel, OK, frames=state.written, seconds=seconds, segments=segments,
                                  outputs=[summary_rel(o.path, self.out) for o in outputs], letterbox=letterbox,
                                  meta=summary_rel(meta, self.out) if meta is not None else None,
                                  detections=detections, frames_kept=state.kept)
        if state.writer is not None:
            self._output(state, lambda: state.drain(force=True))
        detections = self._detections(state)  # its partial output's (None: its writer was dropped)
        if state.writer is not None:  # still there: the drain did not fail
            state.partial = self._output(state, state.writer.fail)
        if state.partial is not None and self.partials is not None:
            try:  # what the next run needs to continue it
                self.partials.record(c.rel, state.partial, state.source, state.beyond)
            except OutputError as e:
                log.warning("%s: its partial output cannot be continued by a rerun (%s)", c.rel, e)
        kept = [o for o in self.sink.outputs(c.rel) if o.is_file()]
        log.warning("%s: %s%s", c.rel, state.error,
                    f"; its earlier output {kept[0]} is left as it was" if kept else "")
        return FileReport(c.rel, ERROR, frames=state.written, seconds=seconds, error=state.error,
                          partial_output=summary_rel(state.partial, self.out) if state.partial else None,
                          segments=segments, letterbox=letterbox, detections=detections)

    @staticmethod
    def _whole_segments(state: _FileState) -> list[tuple[int, int, list[bytes]]]:
        """A stopped split video's segments past its gap-free prefix whose frames are all here
        (start, end, their lines), so the next run need not infer them again."""
        p = state.plan
        if state.writer is None or not p.split:
            return []
        ranges = [(s.start, s.end) for s in p.segments if s.seg_id in state.ended_ok]
        ranges += [(k.start, k.end) for k in (p.kept.segments if p.kept is not None else ())]
        render = state.writer.render
        whole = []
        for start, end in sorted(ranges):
            lo, hi = bisect.bisect_left(p.selected, start), bisect.bisect_left(p.selected, end)
            if lo >= state.written and hi > lo and all(seq in state.pending for seq in range(lo, hi)):
                items = [state.pending[seq] for seq in range(lo, hi)]
                lines = [r.line if isinstance(r, _Carried) else render(r.index, r.t_s, r.detections) for r in items]
                whole.append((start, end, lines))
        return whole

    def _detections(self, state: _FileState) -> dict[str, int] | None:
        """The detections its writer wrote, per class name: counted where they are written, so
        after ``--classes``/``--conf``. None when there is no writer to ask."""
        counts = getattr(state.writer, "class_counts", None) if state.writer is not None else None
        if counts is None:
            return None
        return named_counts(counts, self.sidecars.model.names if self.sidecars is not None else {})

    def _stages(self, state: _FileState, detections: dict[str, int] | None = None) -> list[Stage]:
        """What is committed with a file's output: its sidecar, then its record (the commit point)."""
        c = state.plan.candidate
        stages: list[Stage] = []
        if self.sidecars is not None:
            sidecars = self.sidecars
            stages.append(lambda outputs: sidecars.stage(c, state.letterbox, state.written, [o.path for o in outputs],
                                                         detections))
        stages.append(lambda outputs: self.ledger.stage(c.path, c.rel, state.written, outputs, source=state.source))
        return stages

    @staticmethod
    def _source_change(state: _FileState) -> str | None:
        """Why the file's frames may not be its current content: it changed since its decoding
        started (a recording still being written, a file replaced). None: the same file."""
        try:
            now = SourceIdentity.of(state.plan.candidate.path)
        except OSError as e:
            return f"the source changed during the run ({e.strerror}); rerun to redo it"
        if state.source is None or not now.same_file(state.source):
            return "the source changed during the run; rerun to redo it once it is complete"
        return None
