"""python -m client.summary OUT: merge the shards' summaries into one ``OUT/summary.json``.

Each ``--shard I/N`` run writes ``OUT/summary.shard-I-of-N.json``, then merges what it sees
under a lock on ``OUT/.framestream/summary.lock``; the shard that finishes last sees all N
and writes the complete ``summary.json``. This command does the same merge by hand, e.g.
while shards still run (the summary then names the missing ones).

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .commandline import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Parser, configure_logging, exit_code, print_error
from .errors import FramestreamError, UsageError
from .outfiles import OutTree
from .outlock import open_lock
from .report import ERROR, NOT_PROCESSED, OK, SKIPPED, class_counts, write_summary
from .resume import STATE_DIR
from .shards import Shard
from .terminal import printable
from .wording import counted

log = logging.getLogger("client.summary")

__all__ = ["shard_summary_name", "read_shards", "merge", "write_and_merge", "main"]

EXIT_INCOMPLETE = EXIT_FAILED  # shards missing, or files failed or not processed
_NAME = re.compile(r"summary\.shard-(\d+)-of-(\d+)\.json")
_COUNTS = ("files", OK, ERROR, SKIPPED, NOT_PROCESSED, "resumed", "frames")


def shard_summary_name(shard: Shard) -> str:
    return f"summary.{shard.name}.json"


def read_shards(out: Path) -> dict[int, dict[int, dict]]:
    """Every readable shard summary under ``out``: {N: {I: summary}}."""
    found: dict[int, dict[int, dict]] = {}
    for entry in sorted(os.listdir(out)):
        m = _NAME.fullmatch(entry)
        if m is None:
            continue
        try:
            summary = json.loads((out / entry).read_text(encoding="utf-8"))
            _check_shape(summary)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); that shard counts as missing", out / entry, e)
            continue
        found.setdefault(int(m[2]), {})[int(m[1])] = summary
    return found


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_shape(summary: object) -> None:
    """What :func:`merge` reads of a shard summary, as a ValueError naming the first thing amiss:
    a file that parses as JSON but is not a shard's summary (``{}``, another tool's) is refused
    here, not met as a KeyError after a shard's work."""
    if not isinstance(summary, dict):
        raise ValueError(f"not a shard summary: a JSON {type(summary).__name__}, not an object")
    files, totals = summary.get("files"), summary.get("totals")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and _number(f.get("frames")) for f in files):
        raise ValueError("not a shard summary: no 'files' list of entries with a path and frames")
    missing = [k for k in (*_COUNTS, "wall_seconds", "fps")
               if not isinstance(totals, dict) or not _number(totals.get(k))]
    if missing:
        raise ValueError(f"not a shard summary: 'totals' lacks {', '.join(missing)}")
    if not isinstance(summary.get("shard", {}), dict) or not isinstance(summary.get("stopped"), (str, type(None))):
        raise ValueError("not a shard summary: 'shard' or 'stopped' is of the wrong kind")


def merge(shards: dict[int, dict], count: int) -> dict[str, object]:
    """One summary from shard summaries {I: summary}: every file once, totals summed, wall the
    longest shard's (they run side by side), and each shard's own figures."""
    files: dict[str, dict] = {}
    overlap: list[str] = []
    per_shard = []
    for index in sorted(shards):
        s = shards[index]
        for f in s["files"]:
            if f["path"] in files:
                overlap.append(f["path"])
            files.setdefault(f["path"], f)
        t = s["totals"]
        per_shard.append({"index": index, "host": s.get("shard", {}).get("host"), "wall_seconds": t["wall_seconds"],
                          "fps": t["fps"], "stopped": s.get("stopped"), **{k: t[k] for k in _COUNTS}})
    totals: dict[str, object] = {k: sum(p[k] for p in per_shard) for k in _COUNTS}
    wall = max((p["wall_seconds"] for p in per_shard), default=0.0)
    totals.update(wall_seconds=wall, fps=round(totals["frames"] / wall, 2) if wall > 0 else 0.0,
                  shard_seconds=round(sum(p["wall_seconds"] for p in per_shard), 3))
    totals.update(merge_detections([shards[i]["totals"] for i in sorted(shards)]))
    first = shards[min(shards)] if shards else {}
    merged: dict[str, object] = {
        "files": [files[p] for p in sorted(files)],
        "totals": totals,
        "stopped": next((p["stopped"] for p in per_shard if p["stopped"]), None),
        "shards": {"count": count, "merged": sorted(shards),
                   "missing": [i for i in range(count) if i not in shards], "per_shard": per_shard},
        "model": first.get("model"),
        "options": first.get("options"),
        "inputs": first.get("inputs"),
    }
    for f in merged["files"]:  # a shard gave each file its share of that shard's frames: now of all
        if f.get("share") is not None:
            f["share"] = round(f["frames"] / totals["frames"], 4) if totals["frames"] else None
    if overlap:  # the directory changed between shards' starts: say so rather than hide it
        merged["overlap"] = sorted(set(overlap))
    return merged


def merge_detections(shard_totals: list[dict]) -> dict[str, object]:
    """The shards' detection counts summed, class by class (so the classes add up to the total).
    A shard summary of a version that counted none makes its ok files' counts unknown, not 0."""
    by_class: Counter[str] = Counter()
    unknown = 0
    for t in shard_totals:
        if "detections" not in t:
            unknown += int(t.get(OK, 0))
            continue
        by_class.update({str(k): int(v) for k, v in (t.get("detections_by_class") or {}).items()})
        unknown += int(t.get("detections_unknown", 0))
    return {"detections": sum(by_class.values()), "detections_by_class": class_counts(by_class),
            "detections_unknown": unknown}


@contextmanager
def _merge_lock(out: Path) -> Iterator[None]:
    """Shards write and merge one at a time, so the last one to finish reads every summary."""
    fd = open_lock(OutTree(out), (STATE_DIR, "summary.lock"))  # never through a symlink planted in OUT
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_and_merge(out: Path, shard: Shard, summary: dict[str, object]) -> Path | None:
    """Write this shard's summary; when every shard's is there, the merged ``summary.json`` too
    (returned; None while shards are missing)."""
    with _merge_lock(out):
        write_summary(out, summary, shard_summary_name(shard))
        shards = read_shards(out).get(shard.count, {})
        if len(shards) < shard.count:
            log.info("%d of %d shard summaries present: the last shard to finish writes summary.json",
                     len(shards), shard.count)
            return None
        return write_summary(out, merge(shards, shard.count))


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
        merged = merge(shards, count)
        path = write_summary(out, merged)
    t, missing = merged["totals"], merged["shards"]["missing"]
    print(f"{printable(str(path))}: {len(shards)} of {count} shards; {counted(t['files'], 'file')}: {t[OK]} ok, "
          f"{t[ERROR]} error, {t[SKIPPED]} skipped, {t[NOT_PROCESSED]} not processed; {counted(t['frames'], 'frame')}, "
          f"{t['detections']} detections, longest shard "
          f"{t['wall_seconds']:.1f} s" + (f"; missing shards: {', '.join(map(str, missing))}" if missing else ""))
    complete = not missing and t[ERROR] == 0 and t[NOT_PROCESSED] == 0
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
