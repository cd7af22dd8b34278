"""``--shard I/N``: one run's files split over N independent processes, balanced by work.

Every shard discovers the same directory and estimates each video's work from container
metadata alone, so every shard computes the same plan without talking to the others. The
videos are packed longest first onto the least loaded of N bins (LPT: within 4/3 of the
best split), ties broken by path, so shards finish close together even when one long file
sits among many short ones. Entries that need no work (not videos, unreadable) go to the
shard their path's hash names, so a merged summary lists every file exactly once.

The directory must not change while the shards run: a file added in between may be taken
by no shard, or by two.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .discovery import Candidate, Discovery
from .errors import UsageError
from .limits import MAX_SHARDS, ascii_digits

__all__ = ["Shard", "parse_shard", "shard_from_env", "resolve_shard", "partition", "part", "owner", "take"]

SHARDS_ENV = "FRAMESTREAM_SHARDS"  # the Indexed Job's completions: Kubernetes does not expose them


@dataclass(frozen=True)
class Shard:
    index: int  # 0 <= index < count
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(f"shard {self.index}/{self.count} does not exist: I/N needs 0 <= I < N")
        if self.count > MAX_SHARDS:
            raise UsageError(f"{self.count} shards: at most {MAX_SHARDS} (Kubernetes' limit on an Indexed Job's "
                             "completions; the merged summary waits for, and lists, every one)")

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def parse_shard(text: str, *, source: str = "--shard") -> Shard:
    """``"I/N"`` -> Shard(I, N); anything else is a UsageError that names the source."""
    index, sep, count = text.partition("/")
    if not sep or not ascii_digits(index.strip()) or not ascii_digits(count.strip()):
        raise UsageError(f"{source} takes I/N (shard I of N, 0 <= I < N, e.g. 0/4), got {text!r}")
    try:
        return Shard(int(index), int(count))
    except UsageError as e:
        raise UsageError(f"{source} {text}: {e}") from None


def _int_env(env: Mapping[str, str], name: str) -> int:
    value = env[name].strip()
    if not ascii_digits(value.removeprefix("-")):
        raise UsageError(f"{name}={env[name]!r} is not a whole number")
    return int(value)


def shard_from_env(env: Mapping[str, str]) -> Shard | None:
    """The shard an orchestrator assigned, or None when none did.

    Kubernetes Indexed Job: ``JOB_COMPLETION_INDEX`` with ``FRAMESTREAM_SHARDS`` (set it to the
    job's completions). Slurm job array: ``SLURM_ARRAY_TASK_ID`` - ``SLURM_ARRAY_TASK_MIN`` of
    ``SLURM_ARRAY_TASK_COUNT``; the array must be contiguous (no step, e.g. ``--array=1-8``).
    """
    k8s, slurm = "JOB_COMPLETION_INDEX" in env, "SLURM_ARRAY_TASK_ID" in env
    if k8s and slurm:
        raise UsageError("both JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID are set: pass --shard I/N to say which")
    if k8s:
        if SHARDS_ENV not in env:
            raise UsageError(f"JOB_COMPLETION_INDEX={env['JOB_COMPLETION_INDEX']} is set but {SHARDS_ENV} is not: "
                             f"set {SHARDS_ENV} to the Indexed Job's completions, or pass --shard I/N")
        return _shard(_int_env(env, "JOB_COMPLETION_INDEX"), _int_env(env, SHARDS_ENV), "JOB_COMPLETION_INDEX")
    if slurm:
        if "SLURM_ARRAY_TASK_COUNT" not in env:
            raise UsageError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --shard I/N")
        first = _int_env(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        count = _int_env(env, "SLURM_ARRAY_TASK_COUNT")
        if "SLURM_ARRAY_TASK_MAX" in env and _int_env(env, "SLURM_ARRAY_TASK_MAX") - first + 1 != count:
            raise UsageError(f"the Slurm array {first}-{env['SLURM_ARRAY_TASK_MAX']} has {count} tasks, not one per "
                             "index (a step or a list): use a contiguous --array, or pass --shard I/N")
        if SHARDS_ENV in env and _int_env(env, SHARDS_ENV) != count:
            raise UsageError(f"{SHARDS_ENV}={env[SHARDS_ENV]} contradicts SLURM_ARRAY_TASK_COUNT={count}")
        return _shard(_int_env(env, "SLURM_ARRAY_TASK_ID") - first, count, "SLURM_ARRAY_TASK_ID")
    if SHARDS_ENV in env:
        raise UsageError(f"{SHARDS_ENV}={env[SHARDS_ENV]} is set but no index (JOB_COMPLETION_INDEX): "
                         "pass --shard I/N")
    return None


def _shard(index: int, count: int, source: str) -> Shard:
    try:
        return Shard(index, count)
    except UsageError as e:
        raise UsageError(f"{source}: {e}") from None


def resolve_shard(arg: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard`` when given (it overrides the environment), else the orchestrator's, else None."""
    if arg is not None:
        return parse_shard(arg)
    return shard_from_env(os.environ if env is None else env)


def partition(works: Sequence[tuple[str, int]], count: int) -> list[list[str]]:
    """LPT: ``(path, work)`` items, longest first (ties by path), each onto the least loaded bin
    (ties: the lowest index). Work counts at least 1, so files of unknown length still spread."""
    bins = _fill(works, count)
    return bins + [[] for _ in range(count - len(bins))]


def part(works: Sequence[tuple[str, int]], count: int, index: int) -> list[str]:
    """Bin ``index`` of :func:`partition`, in time and memory of the items, not of ``count``."""
    bins = _fill(works, count)
    return bins[index] if index < len(bins) else []


def _fill(works: Sequence[tuple[str, int]], count: int) -> list[list[str]]:
    """The non-empty prefix of the LPT bins: with fewer items than bins, the first items each
    take an empty bin in index order, so bins past the items' count stay empty."""
    used = min(count, len(works))
    bins: list[list[str]] = [[] for _ in range(used)]
    heap = [(0, i) for i in range(used)]
    for rel, work in sorted(works, key=lambda w: (-max(1, w[1]), w[0])):
        load, i = heapq.heappop(heap)
        bins[i].append(rel)
        heapq.heappush(heap, (load + max(1, work), i))
    return bins


def owner(rel: str, count: int) -> int:
    """The shard that reports an entry needing no work: from its path alone, the same everywhere."""
    digest = hashlib.sha256(os.fsencode(rel)).digest()
    return int.from_bytes(digest[:8], "big") % count


def take(found: Discovery, shard: Shard, work: Callable[[Candidate], int]) -> Discovery:
    """This shard's part of ``found``: its videos by the balanced partition, its other entries by owner."""
    mine = set(part([(c.rel, work(c)) for c in found.videos], shard.count, shard.index))
    return Discovery(
        videos=[c for c in found.videos if c.rel in mine],
        skipped=[(c, why) for c, why in found.skipped if owner(c.rel, shard.count) == shard.index],
        errors=[(c, why) for c, why in found.errors if owner(c.rel, shard.count) == shard.index],
    )
