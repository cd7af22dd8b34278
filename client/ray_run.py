"""A bulk run over a Ray cluster: the single-machine plan, its units spread over the nodes.

The driver plans as one machine does (triage, estimates, key-frame segments, longest first),
hands each unit to the node with the most free room, and writes every unit's detections
through the same :class:`~client.collector.Collector`, sink and resume ledger, so outputs
and ``summary.json`` are those of one machine. A unit's result is taken whole or not at
all: a node lost mid-run (its actor dies, its result is lost, its backend is gone) puts its
units back in the queue for the others, and no frame is written twice.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import replace

from . import defaults
from .bulk_run import RunOptions, RunResult, Interrupts, schedule_report
from .collector import Collector
from .inputs import absolute
from .pipeline import BatchFailed, FileEnded, FileStarted
from .progress import Progress
from .ray_cluster import ClusterNode, RayCluster, connect
from .ray_worker import Unit, UnitResult
from .resume import ResumeLedger
from .schedule import lpt_order, plan
from .sidecar import Sidecars
from .sinks import Sink
from .telemetry import RunTelemetry
from .triage import triage

log = logging.getLogger(__name__)

__all__ = ["connect", "run_on_ray"]


def run_on_ray(cluster: RayCluster, options: RunOptions, sink: Sink, ledger: ResumeLedger,
               telemetry: RunTelemetry | None = None, *, interrupts: Interrupts | None = None) -> RunResult:
    """:func:`client.bulk_run.run_bulk`, with the units run on the cluster's nodes.

    Signals as there (``interrupts``: the caller's, or the run's own): one that came before the
    dispatch starts stops the run before any unit is handed out; the first stops handing out units
    and the nodes return what their units in flight have (kept as partial outputs); a second stops
    waiting for them.
    """
    options = replace(options, inputs=absolute(options.inputs))  # the nodes' working folders differ
    sidecars = Sidecars(options.out, cluster.model, options.pipeline.sampling.describe(), ledger.options)
    reports, todo = triage(options.inputs, options.out, sink, ledger, overwrite=options.overwrite,
                           follow_links=options.follow_links, shard=options.shard,
                           sampling=options.pipeline.sampling, sidecars=sidecars)
    decoders = sum(n.info.workers for n in cluster.nodes)
    plans = plan(todo, options.pipeline.sampling, workers=decoders, split=options.split)
    units = [Unit(uid, p, s) for uid, (p, s) in enumerate(lpt_order(plans))]
    if any(p.split for p in plans):
        log.info("split %d long video(s) into %d segments at key frames", sum(p.split for p in plans),
                 sum(len(p.segments) for p in plans))
    progress = Progress(files=len(plans), frames_estimate=sum(p.work for p in plans), live=options.progress)
    stopping = threading.Event()
    collector = Collector(plans, sink, ledger, progress, telemetry, out=options.out, stop=stopping.set,
                          sidecars=sidecars)
    dispatch = _Dispatch(cluster.nodes, units, collector, stopping)
    start = time.monotonic()
    with Interrupts.for_run(interrupts, stopping.set, dispatch.abandon, then=(progress.close,),
                            in_flight="the units in flight on the Ray nodes") as interrupts:
        dispatch.run()
    signal_name = interrupts.signal_name  # one that comes later (the summary's writing) stops nothing
    if interrupts.abandoned:
        cluster.abandoned = True  # close without waiting for the nodes
    if signal_name is not None:
        collector.stop_run(f"interrupted ({signal_name})", cause=True)
    makespan = time.monotonic() - start
    reports.update(collector.finish_stopped())
    reports.update(collector.reports)
    schedule = schedule_report(decoders, len(units), makespan, cluster.busy_seconds(), cluster.lanes,
                               collector.decode_times)
    schedule["units_rerun"] = dispatch.rerun
    return RunResult([reports[rel] for rel in sorted(reports)], schedule, collector.stopped, signal_name)


class _Dispatch:
    """Units to nodes, longest first, each to the live node with the most free slots; results
    back to the collector in the driver's thread (the only writer)."""

    def __init__(self, nodes: list[ClusterNode], units: list[Unit], collector: Collector,
                 stopping: threading.Event) -> None:
        self.nodes, self.units, self.collector, self.stopping = nodes, units, collector, stopping
        self.pending = list(range(len(units)))  # a heap of uids: uid order is longest first
        self.in_flight: dict[object, tuple[int, ClusterNode]] = {}
        self.attempts = [0] * len(units)
        self.started: set[int] = set()
        self.rerun = 0
        self._abandoned = threading.Event()

    def abandon(self) -> None:
        """Stop, and stop waiting for the units in flight (a second signal: the user will not wait)."""
        self._abandoned.set()
        self.stopping.set()

    def run(self) -> None:
        import ray

        while not self.stopping.is_set():
            self._fill()
            if not self.in_flight:
                if self.pending:
                    lost = "; ".join(f"{n.info.node_id[:12]}: {n.lost}" for n in self.nodes)
                    self.collector.stop_run(f"no Ray node left to run on ({lost})")
                break
            # a short wait: the stop flag (a signal, a full disk) is looked at between
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=defaults.POLL_S)
            for ref in ready:
                self._take(ref)
        self._stop()

    def _fill(self) -> None:
        while self.pending:
            live = [n for n in self.nodes if n.alive and n.in_flight < n.slots]
            if not live:
                return
            node = max(live, key=lambda n: n.slots - n.in_flight)
            uid = heapq.heappop(self.pending)
            unit = self.units[uid]
            self.in_flight[node.actor.run.remote(unit)] = (uid, node)
            node.in_flight += 1
            self.attempts[uid] += 1
            if uid not in self.started:  # the file's output opens with its first unit
                self.started.add(uid)
                self.collector.handle(FileStarted(unit.plan.file_id, _seg(unit)))
            log.debug("unit %d (%s segment %d) -> node %s", uid, unit.plan.candidate.rel, _seg(unit),
                      node.info.node_id)

    def _take(self, ref) -> None:
        import ray

        uid, node = self.in_flight.pop(ref)
        node.in_flight -= 1
        try:
            result: UnitResult = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # the node (or its worker) died
            self._lose(node, _first_line(e))
            self._retry(uid, f"node {node.info.node_id[:12]} lost")
            return
        except ray.exceptions.RayError as e:  # the result was lost on the way, or the worker failed
            self._retry(uid, _first_line(e))
            return
        if result.fatal is not None:  # the node's backend is gone: the others carry on
            self._lose(node, result.fatal)
            node.actor.stop.remote()
            self._retry(uid, result.fatal)
            return
        if not result.complete:
            self._retry(uid, "its node stopped before it ended")
            return
        self._feed(uid, result)
        node.units += 1
        node.frames += sum(1 for e in result.events if not isinstance(e, (FileEnded, BatchFailed)))
        node.busy_s = max(node.busy_s, result.busy_s)
        log.debug("unit %d done on node %s", uid, node.info.node_id)

    def _feed(self, uid: int, result: UnitResult) -> None:
        """A unit's events as the collector knows them: its file's id instead of the unit's."""
        file_id = self.units[uid].plan.file_id
        for event in result.events:
            if isinstance(event, BatchFailed):
                event = BatchFailed({file_id: sum(event.frames_by_file.values())}, event.reason, event.fatal)
            else:
                event = replace(event, file_id=file_id)
            self.collector.handle(event)

    def _lose(self, node: ClusterNode, reason: str) -> None:
        if node.alive:
            node.lost = reason
            log.warning("ray node %s (%s) lost: %s; its units in flight run again on the others",
                        node.info.node_id[:12], node.info.host, reason)

    def _retry(self, uid: int, reason: str) -> None:
        unit = self.units[uid]
        if self.attempts[uid] < defaults.RAY_MAX_ATTEMPTS:
            self.rerun += 1
            heapq.heappush(self.pending, uid)
            return
        error = f"lost {self.attempts[uid]} times on the Ray cluster, last: {reason}"
        self.collector.handle(FileEnded(unit.plan.file_id, _seg(unit), 0, error))

    def _stop(self) -> None:
        """After a stop: live nodes finish the batches they hold and hand back what their units
        have, which the collector keeps as partial outputs."""
        import ray

        if not self.in_flight:
            return
        for node in self.nodes:
            if node.alive:
                node.actor.stop.remote()
        deadline = time.monotonic() + defaults.RAY_STOP_WAIT_S
        while self.in_flight and not self._abandoned.is_set():  # a short wait: a second signal is looked at between
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=min(defaults.POLL_S, left))
            for ref in ready:
                uid, _ = self.in_flight.pop(ref)
                try:
                    result: UnitResult = ray.get(ref)
                except ray.exceptions.RayError:
                    continue
                self._feed(uid, result)
        self.in_flight.clear()


def _seg(unit: Unit) -> int:
    return unit.segment.seg_id if unit.segment is not None else 0


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
