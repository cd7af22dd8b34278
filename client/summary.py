"""python -m client.summary OUT: merge the shards' summaries into one ``OUT/summary.json``.

Each ``--shard I/N`` run writes ``OUT/summary.shard-I-of-N.json``, then merges what it sees
under a lock on ``OUT/.framestream/summary.lock``; the shard that finishes last sees all N
and writes the complete ``summary.json``. This command does the same merge by hand, e.g.
while shards still run (the summary then names the missing ones). The merge is section by
section (:func:`merge_summaries`): a merged run's report has the Gantt (every shard's
decoders), the throughput plot and the backend and Triton sections a single run's has.

Exit codes: 0 every shard's summary is there and every file ok; 1 usage error (no shard
summaries, or summaries of different N); 2 shards missing, or files failed or not processed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .commandline import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, configure_logging, exit_code, print_error
from .errors import FramestreamError, UsageError
from .outfiles import OutTree
from .outlock import open_lock
from .metrics import server_report
from .report import ERROR, NOT_PROCESSED, OK, SKIPPED, class_counts
from .run_summary import (BackendReport, FileEntry, GanttRow, RunSummary, Schedule, Series, ServerCounters,
                          ShardsInfo, Totals, check_shard_shape, write_summary)
from .resume import STATE_DIR
from .shards import Shard
from .terminal import printable
from .wording import counted

log = logging.getLogger("client.summary")

__all__ = ["shard_summary_name", "read_shards", "merge", "merge_summaries", "merge_schedules", "merge_series",
           "merge_backends", "merge_server", "write_and_merge", "main"]

EXIT_INCOMPLETE = EXIT_FAILED  # shards missing, or files failed or not processed
_NAME = re.compile(r"summary\.shard-(\d+)-of-(\d+)\.json")
_COUNTS = ("files", OK, ERROR, SKIPPED, NOT_PROCESSED, "resumed", "frames")


def shard_summary_name(shard: Shard) -> str:
    return f"summary.{shard.name}.json"


def read_shards(out: Path) -> dict[int, dict[int, RunSummary]]:
    """Every readable shard summary under ``out``: {N: {I: summary}}."""
    found: dict[int, dict[int, RunSummary]] = {}
    for entry in sorted(os.listdir(out)):
        m = _NAME.fullmatch(entry)
        if m is None:
            continue
        try:
            summary = RunSummary.from_json(check_shard_shape(json.loads((out / entry).read_text(encoding="utf-8"))))
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); that shard counts as missing", out / entry, e)
            continue
        found.setdefault(int(m[2]), {})[int(m[1])] = summary
    return found


def merge(shards: Mapping[int, RunSummary | dict], count: int) -> dict[str, object]:
    """:func:`merge_summaries` of summaries as types or as their JSON form, as JSON."""
    typed = {i: s if isinstance(s, RunSummary) else RunSummary.from_json(s) for i, s in shards.items()}
    return merge_summaries(typed, count).to_json()


def merge_summaries(shards: Mapping[int, RunSummary], count: int) -> RunSummary:
    """One summary from shard summaries {I: summary}, section by section: every file once,
    totals summed, wall the longest shard's (they run side by side), each shard's own
    figures; the schedule's busy time summed and its segments concatenated (labelled by
    shard) on one time base, the throughput series added on that time base, the backend
    kept, Triton's figures taken once for the whole run. The time base is the shards' wall
    clocks: each records its start (``started_utc``) and the merge places it that many
    seconds after the earliest; a shard of an older version without one is placed at 0."""
    order = sorted(shards)
    files: dict[str, FileEntry] = {}
    overlap: list[str] = []
    for index in order:
        for f in shards[index].files:
            if f.path in files:
                overlap.append(f.path)
            files.setdefault(f.path, f)
    per_shard = [_shard_figures(i, shards[i]) for i in order]
    each = [shards[i].totals for i in order]
    counts = {k: sum(t.count(k) for t in each) for k in _COUNTS}
    wall = max((t.wall_seconds for t in each), default=0.0)
    by_class, unknown = _detections(each)
    totals = Totals(files=counts["files"], ok=counts[OK], error=counts[ERROR], skipped=counts[SKIPPED],
                    not_processed=counts[NOT_PROCESSED], resumed=counts["resumed"], frames=counts["frames"],
                    wall_seconds=wall, fps=round(counts["frames"] / wall, 2) if wall > 0 else 0.0,
                    continued=sum(t.continued for t in each), frames_kept=sum(t.frames_kept for t in each),
                    detections=sum(by_class.values()), detections_by_class=by_class, detections_unknown=unknown,
                    shard_seconds=round(sum(t.wall_seconds for t in each), 3))
    first = shards[order[0]] if order else None
    offsets = _offsets({i: shards[i].started_utc for i in order})
    frames = counts["frames"]
    merged_files = tuple(replace(f, share=round(f.frames / frames, 4) if frames else None)
                         if f.share is not None else f for f in (files[p] for p in sorted(files)))
    schedule = merge_schedules({i: shards[i] for i in order}, offsets)
    return RunSummary(
        files=merged_files, totals=totals,
        stopped=next((shards[i].stopped for i in order if shards[i].stopped), None),
        schedule=schedule,
        model=first.model if first else None, inputs=first.inputs if first else None,
        options=first.options if first else None,
        backend=merge_backends([shards[i] for i in order], schedule),
        throughput=merge_series([(offsets[i], series) for i in order if (series := shards[i].throughput)]),
        server=merge_server([shards[i].server_counters for i in order]),
        shards=ShardsInfo(count, tuple(order), tuple(i for i in range(count) if i not in shards), tuple(per_shard)),
        overlap=tuple(sorted(set(overlap))),  # the directory changed between shards' starts: said, not hidden
        started_utc=min((s for s in (shards[i].started_utc for i in order) if s is not None), default=None),
    )


def _shard_figures(index: int, s: RunSummary) -> dict[str, object]:
    """One shard's own figures, as the merged summary lists them."""
    t = s.totals
    return {"index": index, "host": s.shard.host if s.shard else None, "wall_seconds": t.wall_seconds, "fps": t.fps,
            "stopped": s.stopped, "started_utc": s.started_utc, **{k: t.count(k) for k in _COUNTS}}


def _offsets(starts: Mapping[int, float | None]) -> dict[int, float]:
    """Each shard's start in seconds after the earliest shard's (0 for one that recorded none)."""
    known = [s for s in starts.values() if s is not None]
    base = min(known, default=0.0)
    return {i: (s - base if s is not None else 0.0) for i, s in starts.items()}


def merge_schedules(shards: Mapping[int, RunSummary], offsets: Mapping[int, float]) -> Schedule | None:
    """Workers, segments and busy time summed; the makespan from the first shard's start to the
    last one's end; the lower bound the largest shard's (shards do not share work); each
    shard's timed segments as rows labelled by shard, moved onto the common time base."""
    timed = {i: s.schedule for i, s in shards.items() if s.schedule is not None}
    if not timed:
        return None
    rows = tuple(GanttRow(i, decoder, f.path, round(offsets[i] + start, 3), seconds)
                 for i, s in shards.items() for f in s.files for decoder, start, seconds in f.timed_segments())
    makespan = max(offsets[i] + sched.makespan_s for i, sched in timed.items())
    lower = max(sched.lower_bound_s for sched in timed.values())
    busy = [sched.busy_s if sched.busy_s is not None else sched.busy_fraction * _lanes(shards[i]) * sched.makespan_s
            for i, sched in timed.items()]
    lanes = sum(_lanes(shards[i]) for i in timed)
    return Schedule(workers=sum(s.workers for s in timed.values()), segments=sum(s.segments for s in timed.values()),
                    makespan_s=round(makespan, 3), work_s=round(sum(s.work_s for s in timed.values()), 3),
                    lower_bound_s=round(lower, 3), efficiency=round(lower / makespan, 3) if makespan > 0 else 0.0,
                    busy_fraction=round(sum(busy) / (lanes * makespan), 3) if lanes and makespan > 0 else 0.0,
                    busy_s=round(sum(busy), 3), rows=rows)


def _lanes(s: RunSummary) -> int:
    return s.backend.lanes if s.backend is not None else 0


def merge_series(series: list[tuple[float, Series]]) -> Series | None:
    """The shards' frames/s series added on the common time base: buckets as wide as the
    widest shard's; each shard bucket's frames go to the common bucket its middle falls in."""
    if not series:
        return None
    bucket = max(s.bucket_s for _, s in series)
    frames: list[float] = []
    for offset, s in series:
        for j, rate in enumerate(s.frames_per_s):
            k = int((offset + (j + 0.5) * s.bucket_s) / bucket)
            if k >= len(frames):
                frames.extend([0.0] * (k + 1 - len(frames)))
            frames[k] += rate * s.bucket_s
    return Series(bucket, tuple(round(n / bucket, 2) for n in frames))


def merge_backends(shards: list[RunSummary], schedule: Schedule | None) -> BackendReport | None:
    """The backend section once: lanes summed over the shards (they run side by side), the peak
    in flight the highest, the busy fraction the merged schedule's. Every shard of one run has
    the same backend; if they differ (shards started with different options), the first shard's
    transport stays and ``differs`` lists each shard's backend and transport, so it is seen, not
    hidden (and a warning says so)."""
    reports = [s.backend for s in shards if s.backend is not None]
    if not reports:
        return None
    peaks = [r.inflight_peak for r in reports if r.inflight_peak is not None]
    limits = [r.inflight_limit for r in reports if r.inflight_limit is not None]
    kinds = [(s.backend_kind, s.backend.transport) for s in shards if s.backend is not None]
    differs = None
    if len(set(kinds)) > 1:
        log.warning("the shards used different backends (%s); the merged summary lists them under backend.differs",
                    ", ".join(sorted({f"{k}/{t}" for k, t in kinds})))
        differs = tuple({"backend": k, "transport": t} for k, t in kinds)
    return replace(reports[0], lanes=sum(r.lanes for r in reports),
                   inflight_limit=sum(limits) if limits else None, inflight_peak=max(peaks) if peaks else None,
                   busy_fraction=schedule.busy_fraction if schedule is not None else reports[0].busy_fraction,
                   differs=differs)


def merge_server(counters: list[ServerCounters | None]) -> Mapping[str, object] | None:
    """Triton's figures once for the run, per server: its counters at the earliest shard's start
    (the lowest) and at the last shard's end (the highest: the last shard to finish scraped after
    every other had ended). Shards sharing a server each saw their siblings' traffic in their own
    window, so adding shard figures would count it twice; this takes the one window. Several
    servers (shards on nodes with their own): one figure set each, by metrics URL."""
    by_url: dict[str, list[ServerCounters]] = {}
    for c in counters:
        if c is not None:
            by_url.setdefault(c.url, []).append(c)
    reports: dict[str, Mapping[str, object]] = {}
    for url, cs in by_url.items():
        before = {k: min(c.before.get(k, 0.0) for c in cs) for k in cs[0].before}
        after = {k: max(c.after.get(k, 0.0) for c in cs) for k in cs[0].after}
        report = server_report(before, after)
        if report is not None:
            reports[url] = report
    if not reports:
        return None
    if len(reports) == 1:
        return next(iter(reports.values()))
    return {"per_server": reports}


def _detections(shard_totals: list[Totals]) -> tuple[dict[str, int], int]:
    """The shards' detection counts summed, class by class (so the classes add up to the total),
    and the ok files whose count is unknown: a shard summary of a version that counted none
    makes its ok files' counts unknown, not 0."""
    by_class: Counter[str] = Counter()
    unknown = 0
    for t in shard_totals:
        if t.detections is None:
            unknown += t.ok
            continue
        by_class.update(t.detections_by_class)
        unknown += t.detections_unknown
    return class_counts(by_class), unknown


@contextmanager
def _merge_lock(out: Path) -> Iterator[None]:
    """Shards write and merge one at a time, so the last one to finish reads every summary."""
    fd = open_lock(OutTree(out), (STATE_DIR, "summary.lock"))  # never through a symlink planted in OUT
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_and_merge(out: Path, shard: Shard, summary: RunSummary) -> Path | None:
    """Write this shard's summary; when every shard's is there, the merged ``summary.json`` too
    (returned; None while shards are missing)."""
    with _merge_lock(out):
        write_summary(out, summary, shard_summary_name(shard))
        shards = read_shards(out).get(shard.count, {})
        if len(shards) < shard.count:
            log.info("%d of %d shard summaries present: the last shard to finish writes summary.json",
                     len(shards), shard.count)
            return None
        return write_summary(out, merge_summaries(shards, shard.count))


def _parser(prog: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="Merge OUT/summary.shard-I-of-N.json (written by "
                                "'--shard I/N' runs) into OUT/summary.json.", epilog=__doc__.split("\n\n")[-1])
    p.add_argument("out", type=Path, metavar="OUT", help="the output directory the shards share")
    return p


def _run(out: Path) -> int:
    if not out.is_dir():
        raise UsageError(f"{out}: not a directory; give the --out the shards wrote to")
    by_count = read_shards(out)
    if not by_count:
        raise UsageError(f"{out}: no summary.shard-I-of-N.json here; run 'python -m client.bulk' with --shard first")
    if len(by_count) > 1:
        names = ", ".join(f"N={n}" for n in sorted(by_count))
        raise UsageError(f"{out} holds shard summaries of different runs ({names}): delete the old ones and rerun")
    count, shards = next(iter(by_count.items()))
    with _merge_lock(out):
        merged = merge_summaries(shards, count)
        path = write_summary(out, merged)
    t, missing = merged.totals, merged.shards.missing if merged.shards else ()
    print(f"{printable(str(path))}: {len(shards)} of {count} shards; {counted(t.files, 'file')}: {t.ok} ok, "
          f"{t.error} error, {t.skipped} skipped, {t.not_processed} not processed; {counted(t.frames, 'frame')}, "
          f"{t.detections} detections, longest shard "
          f"{t.wall_seconds:.1f} s" + (f"; missing shards: {', '.join(map(str, missing))}" if missing else ""))
    complete = not missing and t.error == 0 and t.not_processed == 0
    return EXIT_OK if complete else EXIT_INCOMPLETE


def main(argv: list[str] | None = None, *, prog: str = "python -m client.summary") -> int:
    args = _parser(prog).parse_args(argv)
    configure_logging()
    try:
        return _run(args.out)
    except FramestreamError as e:
        print_error(e)
        return exit_code(e)
    except OSError as e:  # OUT unreadable, or the merged summary.json could not be written
        print_error(f"cannot merge in {args.out}: {e.strerror or e}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
