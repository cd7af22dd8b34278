"""One bulk run, start to end: triage, plan, build jobs, run the pipeline, collect, report.

:mod:`client.bulk` is the command line around it; :func:`run_bulk` is what tests and other
programs call. Each step lives in its own module: :mod:`client.triage` (what needs no work),
:mod:`client.schedule` (estimates, splits, order), :mod:`client.jobs` (a job per file or
segment), :mod:`client.pipeline` (threads and queues), :mod:`client.collector` (outputs in
frame order, file reports).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .collector import Collector
from .continuing import plan_run
from .errors import Interrupted
from .infer import Backend
from .inputs import Inputs
from .jobs import build_jobs
from .pipeline import FrameResult, Pipeline, PipelineConfig
from .partials import Partials
from .progress import Progress
from .report import FileReport
from .resume import ResumeLedger
from .shards import Shard
from .sidecar import Sidecars
from .sinks import Sink
from .telemetry import RunTelemetry
from .throughput import Throughput
from .triage import triage

log = logging.getLogger(__name__)

__all__ = ["Interrupts", "STOP_SIGNALS", "install", "restore", "RunOptions", "RunResult", "run_bulk", "schedule_report"]


@dataclass(frozen=True)
class RunOptions:
    inputs: Inputs | Path  # a directory, or the resolved command line (client.inputs)
    out: Path
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    overwrite: bool = False
    split: bool = True  # cut long files into segments at key frames
    progress: bool | None = None  # None: live bar when stderr is a terminal
    follow_links: bool = False  # follow directory symlinks that lead out of root
    shard: Shard | None = None  # only this shard's part of root (--shard I/N)


@dataclass
class RunResult:
    files: list[FileReport]
    schedule: dict[str, object]
    stopped: str | None = None  # why the run stopped before every file was done (None: it finished)
    interrupt: str | None = None  # the signal that stopped it ("SIGINT", "SIGTERM", "SIGHUP"), if one did
    throughput: dict[str, object] = field(default_factory=dict)  # frames/s over the run (Throughput.to_json)
    started_utc: float | None = None  # when the series and the segments' times start (time.time())


def run_bulk(options: RunOptions, backend: Backend, sink: Sink, ledger: ResumeLedger,
             telemetry: RunTelemetry | None = None, *, interrupts: "Interrupts | None" = None) -> RunResult:
    """Process every video of ``options.inputs``; never raises for a file's fault.

    An interrupt (SIGINT, SIGTERM, SIGHUP) or a fault no file can survive (backend gone, GPU
    failed, output storage unusable, a pipeline bug) stops the run the same way: threads stopped and
    joined, files in flight kept as partial outputs, files not started reported as not
    processed, and a result returned so the caller can still write ``summary.json``.
    ``interrupts``: the caller's, entered for longer than the run (the CLI keeps its handlers
    until the summary is written). By default (None) the run takes no signal: a library caller
    keeps its own handlers, and Python's KeyboardInterrupt on Ctrl-C stops the run's threads and
    leaves this call (files in flight kept as partial outputs). To stop cleanly on signals as
    the CLI does, pass ``with Interrupts() as interrupts``.
    """
    config = options.pipeline
    sidecars = Sidecars(options.out, backend.model, config.sampling.describe(), ledger.options)
    reports, todo = triage(options.inputs, options.out, sink, ledger, overwrite=options.overwrite,
                           follow_links=options.follow_links, shard=options.shard,
                           sampling=options.pipeline.sampling, sidecars=sidecars)
    partials = Partials(options.out, ledger.model_digest, ledger.options)
    plans = plan_run(todo, partials, config.sampling, workers=config.workers, split=options.split,
                     overwrite=options.overwrite)
    continuing = any(p.kept is not None for p in plans)  # a video whose partial disagrees is added again
    split_plans = [p for p in plans if p.split and p.kept is None]
    if split_plans:
        log.info("split %d long video(s) into %d segments at key frames", len(split_plans),
                 sum(len(p.segments) for p in split_plans))
    jobs = build_jobs(plans, config)

    progress = Progress(files=len(plans), frames_estimate=sum(p.work for p in plans), live=options.progress)
    pipeline = Pipeline(backend, config)
    if telemetry is not None:
        in_flight = getattr(backend, "in_flight", None)
        telemetry.watch(queue_depths=pipeline.queue_depths, inflight=lambda: in_flight.now if in_flight else 0)
    collector = Collector(plans, sink, ledger, progress, telemetry, out=options.out, stop=pipeline.stop,
                          sidecars=sidecars, partials=partials,
                          requeue=lambda p: pipeline.add_job(build_jobs([p], config)[0]), settled=pipeline.end_jobs)
    busy_before = backend.busy_seconds()
    start, started_utc = time.monotonic(), time.time()
    throughput = Throughput(start)
    with Interrupts.for_run(interrupts, pipeline.stop, pipeline.abandon, then=(pipeline.close, progress.close),
                            in_flight="the batches in flight") as interrupts:
        pipeline.start(jobs, more=continuing)
        _collect(pipeline, collector, throughput)
    signal_name = interrupts.signal_name  # one that comes later (the summary's writing) stops nothing
    if signal_name is not None:  # the cause, even if a lane gave up waiting first
        collector.stop_run(f"interrupted ({signal_name})", cause=True)
    if pipeline.crash is not None:
        collector.stop_run(f"internal error: {pipeline.crash}")
    makespan = time.monotonic() - start
    reports.update(collector.finish_stopped())
    reports.update(collector.reports)
    busy = backend.busy_seconds() - busy_before
    schedule = schedule_report(config.workers, len(jobs), makespan, busy, backend.lanes, collector.decode_times)
    return RunResult([reports[rel] for rel in sorted(reports)], schedule, collector.stopped, signal_name,
                     throughput.to_json(start + makespan), started_utc)


# What stops a run: Ctrl-C, ``kill``/``docker stop``, a closed terminal or ssh session.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def install(handler: Callable[[int, object], None]) -> dict[int, object]:
    """``handler`` for each of :data:`STOP_SIGNALS` but those a parent set to be ignored
    (``nohup``'s SIGHUP stays ignored); the handlers it replaced, for :func:`restore`."""
    return {s: signal.signal(s, handler) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}


def restore(previous: dict[int, object]) -> None:
    """Put back the handlers :func:`install` replaced."""
    for s, handler in previous.items():
        signal.signal(s, handler)


class Interrupts:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or ssh session) while this is entered.

    Once armed (the run has started), a signal only sets flags, so it never lands as an
    exception inside writing code (a write, a rename, the summary): the first stops the
    pipeline, whose stages finish the batches in flight so their results still reach the
    outputs; a second one abandons them (the collector stops waiting and keeps what it has).
    Not yet armed (start-up, when nothing is being written), a signal raises
    :class:`~client.errors.Interrupted` so start-up ends at once. Signals a parent set to be
    ignored (``nohup``) stay ignored; off the main thread signals are left alone.

    ``listen=False``: no handler is installed (the process keeps its own, and Ctrl-C raises
    KeyboardInterrupt as usual): for a command line run inside another program, a test suite
    say, which must stay the one that a Ctrl-C stops.
    """

    SIGNALS = STOP_SIGNALS

    def __init__(self, stop: Callable[[], None] | None = None, *, armed: bool = True, listen: bool = True) -> None:
        self.signal_name: str | None = None
        self.armed = armed
        self.listen = listen
        self._abandoned = threading.Event()
        self._stop, self._abandon = stop, None
        self._previous: dict[int, object] = {}

    @property
    def abandoned(self) -> bool:
        """A second signal came: stop waiting for work in flight."""
        return self._abandoned.is_set()

    @property
    def exit_code(self) -> int | None:
        """128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP), or None."""
        return None if self.signal_name is None else 128 + signal.Signals[self.signal_name].value

    def arm(self) -> None:
        """From now on a signal sets flags instead of raising."""
        self.armed = True

    def attach(self, stop: Callable[[], None], abandon: Callable[[], None] | None = None) -> None:
        """What the first (``stop``) and a second (``abandon``) signal do to the run now going;
        a signal that came before is acted on at once."""
        self.armed = True
        self._stop, self._abandon = stop, abandon
        if self.signal_name is not None:
            stop()
        if self.abandoned and abandon is not None:
            abandon()

    def detach(self) -> None:
        """The run's stages are gone: later signals are only recorded (for the exit code)."""
        self._stop = self._abandon = None

    @classmethod
    @contextlib.contextmanager
    def for_run(cls, given: "Interrupts | None", stop: Callable[[], None], abandon: Callable[[], None], *,
                then: Sequence[Callable[[], None]] = (), in_flight: str) -> Iterator["Interrupts"]:
        """A run's signals for the block: the caller's (``given``, entered for longer than the run)
        or, if None, none (the caller's handlers stay; see :func:`run_bulk`). ``stop`` and
        ``abandon`` act on the run until the block ends (a signal that came before acts at once);
        then ``then`` is called in order, handlers still in place, so a signal there is recorded,
        never raised. An exception leaving the block (the caller's KeyboardInterrupt) abandons the
        run first, so its threads end and are joined before it propagates. A second signal is
        logged as having left ``in_flight`` unwaited for."""
        with cls(listen=False) if given is None else contextlib.nullcontext(given) as interrupts:
            interrupts.attach(stop, abandon)
            try:
                yield interrupts
            except BaseException:
                stop()
                abandon()
                raise
            finally:
                interrupts.detach()
                for step in then:
                    step()
        if interrupts.abandoned:
            log.warning("a second signal: %s were not waited for", in_flight)

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if not self.armed:
            raise Interrupted(name, 128 + signum)
        if self.signal_name is None:
            self.signal_name = name
            if self._stop is not None:
                self._stop()
            return
        self._abandoned.set()
        if self._abandon is not None:
            self._abandon()

    def __enter__(self) -> "Interrupts":
        if self.listen and threading.current_thread() is threading.main_thread():
            self._previous = install(self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        restore(self._previous)
        self._previous.clear()


def _collect(pipeline: Pipeline, collector: Collector, throughput: Throughput) -> None:
    """Hand every pipeline event to the collector; a collector failure (a bug) stops the run."""
    try:
        for event in pipeline.events():
            collector.handle(event)
            if isinstance(event, FrameResult):
                throughput.frame()
    except Exception as e:
        log.debug("collecting results failed", exc_info=True)
        collector.stop_run(f"internal error: {type(e).__name__}: {e}")
        for _ in pipeline.events():  # let the stopped stages end
            pass


def schedule_report(workers: int, segments: int, makespan: float, busy: float, lanes: int,
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
        "busy_s": round(busy, 3),  # lane-seconds: what a merge of shards sums
    }

