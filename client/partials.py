"""Continuing a partial output: a stopped video's gap-free prefix, kept for the next run.

A video stopped in flight (a signal, a crash, a server outage) leaves its frames so far in its
partial output, ``OUT/<name>.jsonl.partial``. Beside it, ``OUT/.framestream/partial/<name>.record``
(written whole or not at all, through :mod:`client.outfiles`) says what made it: the model's
digest and the options (as the resume ledger compares them), the source's identity, and the
partial's size and SHA-256 as they were when it was kept. The next run continues the video only
when all of these still hold; it then re-decodes from the last key frame at or before the
prefix's last frame and checks that every frame it infers again writes the very line the prefix
holds (byte for byte): the output's own bytes are what must come out identical, so they are what
is compared (a hash of decoded pixels would miss a backend or filter that now answers otherwise).
Otherwise the partial is not trusted and the video is redone from frame 0, one log line per
reason.

JSON lines only: a Parquet partial, and a tracked one (a tracker's state at the cut is not in
the file), are redone from frame 0 as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .discovery import Candidate
from .outfiles import DIGEST, OutTree
from .resume import MODEL_CHANGED, OPTIONS_CHANGED, SOURCE_CHANGED, STATE_DIR, SourceIdentity, _canonical
from .sinks import JsonlSink

__all__ = ["Kept", "KeptSegment", "Verdict", "Partials", "continuations", "discard_lines", "PARTIAL_DAMAGED", "PARTIAL_DISAGREES"]

log = logging.getLogger(__name__)

_VERSION = 1
PARTIAL_DAMAGED = "its partial is damaged"
PARTIAL_MISSING = "its partial is missing"
PARTIAL_INVALID = "its partial's record is not valid"
PARTIAL_OTHER_FRAMES = "its partial is not a prefix of the frames to infer"
PARTIAL_DISAGREES = "its partial disagrees with the frames inferred again"


@dataclass(frozen=True)
class KeptSegment:
    """A split video's segment that was complete when the run stopped, past the gap-free prefix:
    its frames [start, end) (``start`` a key frame), its lines and their frame numbers."""

    start: int
    end: int
    lines: tuple[bytes, ...]
    frames: tuple[int, ...]


@dataclass(frozen=True)
class Kept:
    """A partial that may be continued: its lines (each ending in a newline) and their frame
    numbers, and a split video's complete segments after it."""

    lines: tuple[bytes, ...]
    frames: tuple[int, ...]
    segments: tuple[KeptSegment, ...] = ()

    def class_counts(self, keep: int) -> Counter[int]:
        """The detections of the first ``keep`` lines, per class id (what the output will hold of them)."""
        counts: Counter[int] = Counter()
        for line in self.lines[:keep]:
            counts.update(int(d[5]) for d in json.loads(line)["detections"])
        return counts


@dataclass(frozen=True)
class Verdict:
    """What to do with a video's partial: continue it (``kept``), or redo from 0 (``reason``, None: no partial)."""

    kept: Kept | None = None
    reason: str | None = None


def _digest_of(segments: list[dict]) -> str:
    """The kept segments' digest, so a record's segments are checked as its partial's bytes are."""
    return hashlib.new(DIGEST, json.dumps(segments, sort_keys=True).encode()).hexdigest()


def _segment(doc: dict) -> KeptSegment:
    lines = tuple(line + b"\n" for line in doc["lines"].encode().split(b"\n")[:-1])
    frames = tuple(json.loads(line)["frame"] for line in lines)
    start, end = doc["start"], doc["end"]
    if not all(type(v) is int for v in (start, end, *frames)) or not lines:
        raise ValueError("not a segment")
    return KeptSegment(start, end, lines, frames)


def discard_lines(reasons: Iterable[str]) -> list[str]:
    """One line per reason: "redoing 2 videos from frame 0: the source changed"."""
    counts = Counter(reasons)
    return [f"redoing {n} video{'s' if n != 1 else ''} from frame 0: {reason}" for reason, n in counts.most_common()]


class Partials:
    """The records of kept partial outputs, keyed by the outputs' (possibly shortened) names."""

    def __init__(self, out: Path, model_digest: str, options: Mapping[str, object]) -> None:
        self.tree = OutTree(Path(out))
        self._sink = JsonlSink(Path(out))
        self.model_digest = model_digest
        self.options = _canonical(options)

    @property
    def continuable(self) -> bool:
        """JSON lines, untracked: a prefix's bytes are the output's, and no state outlives a frame."""
        return self.options.get("format", "jsonl") == "jsonl" and "track" not in self.options

    def _parts(self, rel: str) -> tuple[str, ...]:
        stem = self.tree.stem(rel)
        return (STATE_DIR, "partial", *stem[:-1], f"{stem[-1]}.record")  # JSON; not a ledger record's .json

    def record(self, rel: str, partial: Path, source: SourceIdentity | None,
               segments: Iterable[tuple[int, int, list[bytes]]] = ()) -> None:
        """Describe the partial output now at ``partial`` (whole lines only are counted), with a
        split video's complete ``segments`` after it (start, end, lines), held in the record
        itself; without the source's identity nothing is recorded (and an earlier record goes)."""
        if source is None or not self.continuable:
            self.forget(rel)
            return
        f = self.tree.open_regular(self._name_parts(partial))
        if f is None:
            self.forget(rel)
            return
        with f:
            data = f.read()
        lines = data.split(b"\n")[:-1]
        try:
            last = json.loads(lines[-1])["frame"] if lines else -1
        except (ValueError, KeyError):
            last = None
        kept = [{"start": a, "end": b, "lines": b"".join(seg).decode()} for a, b, seg in segments
                if last is not None and a > last and seg]
        doc = {"version": _VERSION, "model": self.model_digest, "options": self.options,
               "source": source.to_json(), "name": self._name(partial), "frames": len(lines),
               "size": len(data), DIGEST: hashlib.new(DIGEST, data).hexdigest(),
               "segments": kept, "segments_" + DIGEST: _digest_of(kept)}
        self.tree.write_file(self._parts(rel), json.dumps(doc).encode())

    def forget(self, rel: str) -> None:
        """No partial of ``rel`` is to be continued (never raises)."""
        try:
            self.tree.remove(self._parts(rel))
        except OSError:
            pass

    def _name(self, path: Path) -> str:
        return Path(path).relative_to(self.tree.out).as_posix()

    def _name_parts(self, path: Path) -> tuple[str, ...]:
        return tuple(self._name(path).split("/"))

    def check(self, video: Path, rel: str, partial: Path) -> Verdict:
        """Continue ``partial`` only if its record matches the model, the options, the source
        and the partial's bytes; else why not (None when there is no partial or no record)."""
        if not self.continuable:
            return Verdict()
        f = self.tree.open_regular(self._parts(rel))
        if f is None:
            return Verdict()
        try:
            with f:
                record = json.loads(f.read())
            return self._compare(record, video, partial)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Verdict(reason=PARTIAL_INVALID)

    def _compare(self, record: dict, video: Path, partial: Path) -> Verdict:
        if not isinstance(record, dict) or record.get("version") != _VERSION:
            return Verdict(reason=PARTIAL_INVALID)
        if record["model"] != self.model_digest:
            return Verdict(reason=MODEL_CHANGED)
        theirs = record["options"]
        changed = sorted(k for k in set(theirs) | set(self.options) if theirs.get(k) != self.options.get(k))
        if changed:
            return Verdict(reason=f"{OPTIONS_CHANGED}: {', '.join(changed)}")
        try:
            now = SourceIdentity.of(video)
        except OSError:
            return Verdict(reason=SOURCE_CHANGED)
        source = record["source"]
        if not now.same_file(SourceIdentity(source["size"], source["mtime_ns"], source.get("ctime_ns", 0),
                                            source["inode"])):
            return Verdict(reason=SOURCE_CHANGED)
        if record["name"] != self._name(partial):
            return Verdict(reason=PARTIAL_MISSING)
        f = self.tree.open_regular(self._name_parts(partial))
        if f is None:
            return Verdict(reason=PARTIAL_MISSING)
        with f:
            data = f.read()
        if len(data) != record["size"] or hashlib.new(DIGEST, data).hexdigest() != record[DIGEST]:
            return Verdict(reason=PARTIAL_DAMAGED)
        lines = tuple(line + b"\n" for line in data.split(b"\n")[:-1])
        if not lines or not data.endswith(b"\n") or len(lines) != record["frames"]:
            return Verdict(reason=PARTIAL_DAMAGED)
        try:
            frames = tuple(json.loads(line)["frame"] for line in lines)
        except (ValueError, KeyError, TypeError):
            return Verdict(reason=PARTIAL_DAMAGED)  # as recorded, yet not lines of ours
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in frames):
            return Verdict(reason=PARTIAL_DAMAGED)
        segments = record["segments"]
        if _digest_of(segments) != record["segments_" + DIGEST]:
            return Verdict(reason=PARTIAL_DAMAGED)
        try:
            kept = tuple(_segment(seg) for seg in segments)
        except (ValueError, KeyError, TypeError, AttributeError):
            return Verdict(reason=PARTIAL_DAMAGED)
        return Verdict(Kept(lines, frames, kept))

    def partial(self, rel: str) -> Path:
        """Where ``rel``'s partial output is kept (the JSON-lines sink's place)."""
        return self._sink.partial(rel)


def continuations(candidates: Iterable[Candidate], partials: Partials) -> dict[str, Kept]:
    """The candidates whose partial outputs may be continued, by rel; one log line per reason
    why others are not ("redoing 2 videos from frame 0: the source changed")."""
    kept: dict[str, Kept] = {}
    reasons: list[str] = []
    for c in candidates:
        verdict = partials.check(c.path, c.rel, partials.partial(c.rel))
        if verdict.kept is not None:
            kept[c.rel] = verdict.kept
        elif verdict.reason is not None:
            reasons.append(verdict.reason)
            partials.forget(c.rel)
    for line in discard_lines(reasons):
        log.info("%s", line)
    return kept
