"""``summary.json`` as a type: :class:`RunSummary`, built once by the run, merged section by
section for shards (:mod:`client.summary`), read back by ``render`` and the HTML report.

The JSON form carries ``"version"`` (:data:`VERSION`); a summary without one is version 1
(framestream before this type) and still reads. Keys this version does not know are kept as
they were (``extra``), so an older program's reading never drops a newer one's section.
Every string key of the format is read here, in the ``from_json`` methods, and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .outfiles import OutTree, write_atomically

__all__ = ["VERSION", "SUMMARY_NAME", "FileEntry", "Totals", "Schedule", "GanttRow", "Series", "ServerCounters",
           "BackendReport", "ShardInfo", "ShardsInfo", "RunSummary", "write_summary", "read_summary",
           "check_shard_shape"]

VERSION = 2  # 1: the unversioned dict of framestream up to b5d07fc
SUMMARY_NAME = "summary.json"

Json = dict[str, Any]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: object, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _int(value: object, default: int = 0) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _without(d: Mapping[str, Any], known: tuple[str, ...]) -> Json:
    return {k: v for k, v in d.items() if k not in known}


_FILE_KEYS = ("path", "status", "frames", "seconds", "error", "resumed", "partial_output", "outputs", "segments",
              "letterbox", "meta", "detections", "frames_kept", "share")


@dataclass(frozen=True)
class FileEntry:
    """One video (or skipped entry) of the run, as :meth:`client.report.FileReport.to_json` wrote it."""

    path: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    resumed: bool = False
    partial_output: str | None = None
    outputs: tuple[str, ...] = ()
    segments: tuple[Json, ...] = ()  # per segment: frames, seconds, start_seconds, decoder
    letterbox: str | None = None
    meta: str | None = None
    detections: Mapping[str, int] | None = None
    frames_kept: int = 0
    share: float | None = None
    extra: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "FileEntry":
        det = d.get("detections")
        return cls(path=str(d["path"]), status=str(d.get("status")), frames=_int(d.get("frames")),
                   seconds=_num(d.get("seconds")), error=d.get("error"), resumed=bool(d.get("resumed")),
                   partial_output=d.get("partial_output"), outputs=tuple(d.get("outputs") or ()),
                   segments=tuple(s for s in d.get("segments") or () if isinstance(s, dict)),
                   letterbox=d.get("letterbox"), meta=d.get("meta"),
                   detections=dict(det) if isinstance(det, dict) else None, frames_kept=_int(d.get("frames_kept")),
                   share=d.get("share") if _num(d.get("share"), -1.0) >= 0 else None,
                   extra=_without(d, _FILE_KEYS))

    def to_json(self) -> Json:
        return {"path": self.path, "status": self.status, "frames": self.frames, "seconds": self.seconds,
                "error": self.error, "resumed": self.resumed, "partial_output": self.partial_output,
                "outputs": list(self.outputs), "segments": [dict(s) for s in self.segments],
                "letterbox": self.letterbox, "meta": self.meta,
                "detections": dict(self.detections) if self.detections is not None else None,
                "frames_kept": self.frames_kept, **self.extra, "share": self.share}

    def timed_segments(self) -> list[tuple[int, float, float]]:
        """(decoder, start_seconds, seconds) of each segment the run timed."""
        return [(_int(s.get("decoder")), _num(s.get("start_seconds")), _num(s.get("seconds")))
                for s in self.segments if "start_seconds" in s and "decoder" in s]


_COUNT_KEYS = ("files", "ok", "error", "skipped", "not_processed", "resumed", "frames")


@dataclass(frozen=True)
class Totals:
    files: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    not_processed: int = 0
    resumed: int = 0
    frames: int = 0
    wall_seconds: float = 0.0
    fps: float = 0.0
    continued: int = 0
    frames_kept: int = 0
    detections: int | None = None  # None: a summary of a version that counted none
    detections_by_class: Mapping[str, int] = field(default_factory=dict)
    detections_unknown: int = 0
    shard_seconds: float | None = None  # merged: the shards' walls summed
    extra: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Totals":
        return cls(**{k: _int(d.get(k)) for k in _COUNT_KEYS}, wall_seconds=_num(d.get("wall_seconds")),
                   fps=_num(d.get("fps")), continued=_int(d.get("continued")), frames_kept=_int(d.get("frames_kept")),
                   detections=_int(d["detections"]) if "detections" in d else None,
                   detections_by_class={str(k): _int(v) for k, v in _mapping(d.get("detections_by_class")).items()},
                   detections_unknown=_int(d.get("detections_unknown")),
                   shard_seconds=_num(d["shard_seconds"]) if "shard_seconds" in d else None,
                   extra=_without(d, (*_COUNT_KEYS, "wall_seconds", "fps", "continued", "frames_kept", "detections",
                                      "detections_by_class", "detections_unknown", "shard_seconds")))

    def to_json(self) -> Json:
        d: Json = {k: getattr(self, k) for k in _COUNT_KEYS[:-1]}
        d.update(continued=self.continued, frames_kept=self.frames_kept, frames=self.frames,
                 wall_seconds=self.wall_seconds, fps=self.fps)
        if self.shard_seconds is not None:
            d["shard_seconds"] = self.shard_seconds
        if self.detections is not None:
            d.update(detections=self.detections, detections_by_class=dict(self.detections_by_class),
                     detections_unknown=self.detections_unknown)
        return {**d, **self.extra}

    def count(self, key: str) -> int:
        """One of the per-status counts by its summary name (``ok``, ``error``, ...)."""
        return int(getattr(self, key))


@dataclass(frozen=True)
class GanttRow:
    """A timed segment of a merged run: which shard's decoder, from when (seconds since the
    earliest shard started) and for how long."""

    shard: int
    decoder: int
    path: str
    start_s: float
    seconds: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "GanttRow":
        return cls(_int(d.get("shard")), _int(d.get("decoder")), str(d.get("path")), _num(d.get("start_s")),
                   _num(d.get("seconds")))

    def to_json(self) -> Json:
        return {"shard": self.shard, "decoder": self.decoder, "path": self.path, "start_s": self.start_s,
                "seconds": self.seconds}


@dataclass(frozen=True)
class Schedule:
    """How close the run came to its lower bound (:func:`client.bulk_run.schedule_report`)."""

    workers: int = 0
    segments: int = 0
    makespan_s: float = 0.0
    work_s: float = 0.0
    lower_bound_s: float = 0.0
    efficiency: float = 0.0
    busy_fraction: float = 0.0
    busy_s: float | None = None  # the backend's busy time (lane-seconds); None in version 1
    rows: tuple[GanttRow, ...] | None = None  # merged runs: every shard's segments on one time base
    extra: Json = field(default_factory=dict)

    _KEYS = ("workers", "segments", "makespan_s", "work_s", "lower_bound_s", "efficiency", "busy_fraction",
             "busy_s", "rows")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Schedule":
        rows = d.get("rows")
        return cls(workers=_int(d.get("workers")), segments=_int(d.get("segments")),
                   makespan_s=_num(d.get("makespan_s")), work_s=_num(d.get("work_s")),
                   lower_bound_s=_num(d.get("lower_bound_s")), efficiency=_num(d.get("efficiency")),
                   busy_fraction=_num(d.get("busy_fraction")),
                   busy_s=_num(d["busy_s"]) if "busy_s" in d else None,
                   rows=tuple(GanttRow.from_json(r) for r in rows if isinstance(r, dict))
                   if isinstance(rows, list) else None,
                   extra=_without(d, cls._KEYS))

    def to_json(self) -> Json:
        d: Json = {"workers": self.workers, "segments": self.segments, "makespan_s": self.makespan_s,
                   "work_s": self.work_s, "lower_bound_s": self.lower_bound_s, "efficiency": self.efficiency,
                   "busy_fraction": self.busy_fraction}
        if self.busy_s is not None:
            d["busy_s"] = self.busy_s
        d.update(self.extra)
        if self.rows is not None:
            d["rows"] = [r.to_json() for r in self.rows]
        return d

    def headline(self) -> dict[str, object]:
        """The figures the report's schedule table shows."""
        return {"workers": self.workers, "segments": self.segments, "makespan_s": self.makespan_s,
                "lower_bound_s": self.lower_bound_s, "efficiency": self.efficiency,
                "busy_fraction": self.busy_fraction}


@dataclass(frozen=True)
class Series:
    """Frames/s over the run in buckets of ``bucket_s`` seconds from its start
    (:class:`client.throughput.Throughput`)."""

    bucket_s: float
    frames_per_s: tuple[float, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Series | None":
        rates = d.get("frames_per_s")
        if not isinstance(rates, list) or _num(d.get("bucket_s")) <= 0:
            return None
        return cls(_num(d.get("bucket_s")), tuple(_num(r) for r in rates))

    def to_json(self) -> Json:
        return {"bucket_s": self.bucket_s, "frames_per_s": list(self.frames_per_s)}


@dataclass(frozen=True)
class ServerCounters:
    """Triton's cumulative counters at the run's start and end, kept so a merge can take the
    server's figures once for all shards (first start to last end) instead of adding windows
    that overlap."""

    url: str
    before: Mapping[str, float]
    after: Mapping[str, float]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ServerCounters | None":
        before, after = d.get("before"), d.get("after")
        if not isinstance(before, dict) or not isinstance(after, dict):
            return None
        return cls(str(d.get("url")), {k: _num(v) for k, v in before.items()},
                   {k: _num(v) for k, v in after.items()})

    def to_json(self) -> Json:
        return {"url": self.url, "before": dict(self.before), "after": dict(self.after)}


@dataclass(frozen=True)
class ShardInfo:
    index: int
    count: int
    host: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ShardInfo":
        return cls(_int(d.get("index")), _int(d.get("count")), d.get("host"))

    def to_json(self) -> Json:
        return {"index": self.index, "count": self.count, "host": self.host}


@dataclass(frozen=True)
class ShardsInfo:
    """A merged run: which shards it holds and each one's own figures."""

    count: int
    merged: tuple[int, ...]
    missing: tuple[int, ...]
    per_shard: tuple[Json, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ShardsInfo":
        return cls(_int(d.get("count")), tuple(_int(i) for i in d.get("merged") or ()),
                   tuple(_int(i) for i in d.get("missing") or ()),
                   tuple(p for p in d.get("per_shard") or () if isinstance(p, dict)))

    def to_json(self) -> Json:
        return {"count": self.count, "merged": list(self.merged), "missing": list(self.missing),
                "per_shard": [dict(p) for p in self.per_shard]}

    def walls(self) -> list[tuple[object, object, object]]:
        """(index, wall seconds, host) per shard."""
        return [(p.get("index"), p.get("wall_seconds"), p.get("host")) for p in self.per_shard]


@dataclass(frozen=True)
class BackendReport:
    """How the backend was used: its lanes (sessions or requests in flight), for Triton the
    in-flight limit and peak and the transport, and the busy fraction (the schedule's)."""

    lanes: int = 0
    inflight_limit: int | None = None
    inflight_peak: int | None = None
    transport: str | None = None
    busy_fraction: float | None = None
    differs: tuple[Json, ...] | None = None  # merged shards that used different backends: each one's
    extra: Json = field(default_factory=dict)

    _KEYS = ("lanes", "inflight_limit", "inflight_peak", "transport", "busy_fraction", "differs")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BackendReport":
        differs = d.get("differs")
        return cls(lanes=_int(d.get("lanes")),
                   inflight_limit=_int(d["inflight_limit"]) if "inflight_limit" in d else None,
                   inflight_peak=_int(d["inflight_peak"]) if "inflight_peak" in d else None,
                   transport=str(d["transport"]) if d.get("transport") is not None else None,
                   busy_fraction=_num(d["busy_fraction"]) if "busy_fraction" in d else None,
                   differs=tuple(x for x in differs if isinstance(x, dict)) if isinstance(differs, list) else None,
                   extra=_without(d, cls._KEYS))

    def to_json(self) -> Json:
        d: Json = {"lanes": self.lanes}
        if self.inflight_limit is not None:
            d["inflight_limit"] = self.inflight_limit
        if self.inflight_peak is not None:
            d["inflight_peak"] = self.inflight_peak
        if self.transport is not None:
            d["transport"] = self.transport
        d.update(self.extra)
        if self.busy_fraction is not None:
            d["busy_fraction"] = self.busy_fraction
        if self.differs is not None:
            d["differs"] = [dict(x) for x in self.differs]
        return d


_TOP = ("version", "started_utc", "files", "totals", "stopped", "schedule", "model", "inputs", "options", "backend",
        "throughput", "server", "server_counters", "ray", "shard", "shards", "overlap")


@dataclass(frozen=True)
class RunSummary:
    """One run's ``summary.json``. The key-value sections (model, inputs, options, backend,
    server, ray) are kept as the mappings the run gave; the sections a merge or a reader
    computes with are typed."""

    files: tuple[FileEntry, ...]
    totals: Totals
    stopped: str | None = None
    schedule: Schedule | None = None
    model: Mapping[str, Any] | None = None
    inputs: Mapping[str, Any] | None = None
    options: Mapping[str, Any] | None = None
    backend: BackendReport | None = None
    throughput: Series | None = None
    server: Mapping[str, Any] | None = None
    server_counters: ServerCounters | None = None
    ray: Mapping[str, Any] | None = None
    shard: ShardInfo | None = None
    shards: ShardsInfo | None = None
    overlap: tuple[str, ...] = ()
    started_utc: float | None = None  # the run's start, seconds since the epoch (UTC): shards align on it
    version: int = VERSION
    extra: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: object) -> "RunSummary":
        """A summary of any version; ValueError naming what is amiss when ``d`` is not one."""
        if not isinstance(d, dict):
            raise ValueError(f"not a framestream summary: a JSON {type(d).__name__}, not an object")
        files = d.get("files")
        if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                                  for f in files):
            raise ValueError("not a framestream summary: no 'files' list of entries with a path")
        version = d.get("version", 1)
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"not a framestream summary: version {version!r}")
        if version > VERSION:
            raise ValueError(f"a summary of a newer framestream (version {version}; this one reads up to "
                             f"{VERSION}): upgrade framestream")
        schedule, series = d.get("schedule"), d.get("throughput")
        shard, shards = d.get("shard"), d.get("shards")
        counters = d.get("server_counters")
        started = d.get("started_utc")
        return cls(files=tuple(FileEntry.from_json(f) for f in files),
                   totals=Totals.from_json(_mapping(d.get("totals"))),
                   stopped=d.get("stopped") if isinstance(d.get("stopped"), str) else None,
                   schedule=Schedule.from_json(schedule) if isinstance(schedule, dict) else None,
                   model=_opt(d.get("model")), inputs=_opt(d.get("inputs")), options=_opt(d.get("options")),
                   backend=BackendReport.from_json(d["backend"]) if isinstance(d.get("backend"), dict) else None,
                   throughput=Series.from_json(series) if isinstance(series, dict) else None,
                   server=_opt(d.get("server")),
                   server_counters=ServerCounters.from_json(counters) if isinstance(counters, dict) else None,
                   ray=_opt(d.get("ray")),
                   shard=ShardInfo.from_json(shard) if isinstance(shard, dict) else None,
                   shards=ShardsInfo.from_json(shards) if isinstance(shards, dict) else None,
                   overlap=tuple(str(p) for p in d.get("overlap") or ()),
                   started_utc=_num(started) if _num(started, -1.0) >= 0 else None,
                   version=version, extra=_without(d, _TOP))

    def to_json(self) -> Json:
        """Always the current version, in the order people read it."""
        d: Json = {"version": VERSION}
        if self.started_utc is not None:
            d["started_utc"] = round(self.started_utc, 3)
        d.update(files=[f.to_json() for f in self.files], totals=self.totals.to_json(), stopped=self.stopped)
        if self.schedule is not None:
            d["schedule"] = self.schedule.to_json()
        for key in ("model", "inputs", "options"):
            value = getattr(self, key)
            if value is not None:
                d[key] = dict(value)
        if self.backend is not None:
            d["backend"] = self.backend.to_json()
        if self.throughput is not None:
            d["throughput"] = self.throughput.to_json()
        if self.server is not None:
            d["server"] = dict(self.server)
        if self.server_counters is not None:
            d["server_counters"] = self.server_counters.to_json()
        if self.ray is not None:
            d["ray"] = dict(self.ray)
        if self.shard is not None:
            d["shard"] = self.shard.to_json()
        if self.shards is not None:
            d["shards"] = self.shards.to_json()
        if self.overlap:
            d["overlap"] = list(self.overlap)
        d.update(self.extra)
        return d

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    # What readers ask of the key-value sections (their string keys stay in this module).
    @property
    def class_names(self) -> dict[int, str]:
        names = _mapping(_mapping(self.model).get("names"))
        return {int(k): str(v) for k, v in names.items()}

    @property
    def model_digest(self) -> str | None:
        digest = _mapping(self.model).get("digest")
        return str(digest) if digest else None

    @property
    def model_source(self) -> object:
        return _mapping(self.model).get("source")

    @property
    def input_root(self) -> Path | None:
        root = _mapping(self.inputs).get("root")
        return Path(root) if root else None

    @property
    def backend_kind(self) -> str | None:
        """"embedded" or "triton", as the options recorded it."""
        kind = _mapping(self.options).get("backend")
        return str(kind) if kind is not None else None

    def with_changes(self, **changes: Any) -> "RunSummary":
        return replace(self, **changes)


def _opt(value: object) -> Mapping[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


def write_summary(out: Path, summary: RunSummary, name: str = SUMMARY_NAME) -> Path:
    """Atomically, flushed to disk and its folder fsynced before it replaces the last one, through
    the one writer of files below OUT (:func:`client.outfiles.write_atomically`): a temporary of
    this process's own (shards sharing OUT may write at the same time), never opened through a
    symlink. OutputError (an OSError) when it cannot be written."""
    text = summary.to_text().encode("utf-8")
    return write_atomically(OutTree(Path(out)), (name,), lambda f: f.write(text))


def read_summary(path: Path) -> RunSummary:
    """``path`` as a summary; OSError when unreadable, ValueError when it is not one."""
    return RunSummary.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def check_shard_shape(summary: object) -> Any:
    """What a merge reads of a shard summary, as a ValueError naming the first thing amiss: a
    file that parses as JSON but is not a shard's summary (``{}``, another tool's) is refused
    here, not met after a shard's work. Returns ``summary`` for :meth:`RunSummary.from_json`."""
    if not isinstance(summary, dict):
        raise ValueError(f"not a shard summary: a JSON {type(summary).__name__}, not an object")
    files, totals = summary.get("files"), summary.get("totals")
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and _is_number(f.get("frames")) for f in files):
        raise ValueError("not a shard summary: no 'files' list of entries with a path and frames")
    missing = [k for k in (*_COUNT_KEYS, "wall_seconds", "fps")
               if not isinstance(totals, dict) or not _is_number(totals.get(k))]
    if missing:
        raise ValueError(f"not a shard summary: 'totals' lacks {', '.join(missing)}")
    if not isinstance(summary.get("shard", {}), dict) or not isinstance(summary.get("stopped"), (str, type(None))):
        raise ValueError("not a shard summary: 'shard' or 'stopped' is of the wrong kind")
    return summary


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
