"""Resume: remember which videos have complete outputs for this model and these options,
and check those outputs before trusting them.

One small JSON record per completed video under ``OUT/.framestream/done/`` holds the model's
digest and the options separately, the source's identity as it was when the video's
decoding started (size and mtime, compared on resume; ctime and inode, for the record), and
each output's name, size, SHA-256 (computed while it was written) and identity once in place
(size, mtime, ctime, inode). ``check`` says why a video must be redone, one reason of a fixed
set, so a run can log one line per reason. A record that parses but does not hold what a
record holds (``frames: -5``) is not trusted.

A rerun reads none of an output's bytes while its identity is the recorded one: any write to
the file moves its ctime, which no call can set back (``os.utime`` restores mtime, not ctime),
and a file put in its place has another inode. It hashes an output only when that identity
differs (copied, restored from a backup, touched, edited), when the record predates identities
(version 2), or when asked to check every byte (``verify``, ``client.bulk --verify``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OutputError
from .outfiles import DIGEST, Output, OutTree, Staged, boundary, display_rel

__all__ = ["ResumeLedger", "Resume", "SourceIdentity", "redo_lines", "STATE_DIR", "REASONS"]

STATE_DIR = ".framestream"
_VERSION = 3  # 3 adds each output's identity; a version 2 record is still trusted, its outputs hashed
_READABLE = (2, _VERSION)
_IDENTITY = "identity"

NO_RECORD = "no record of a complete output"
MODEL_CHANGED = "the model changed"
OPTIONS_CHANGED = "the options changed"  # followed by ": <the option names>"
SOURCE_CHANGED = "the source changed"
OUTPUT_MISSING = "its output is missing"
OUTPUT_DAMAGED = "its output is damaged"
RECORD_INVALID = "its record is not valid"
REASONS = (NO_RECORD, MODEL_CHANGED, OPTIONS_CHANGED, SOURCE_CHANGED, OUTPUT_MISSING, OUTPUT_DAMAGED, RECORD_INVALID)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SourceIdentity:
    """A file (a source, or an output once in place) as it was at one moment: any change to its
    bytes, or its replacement by another file, changes one of these."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> "SourceIdentity":
        """``path``'s identity now (symlinks followed, as the decoders open it); OSError if gone."""
        return cls.of_stat(os.stat(path))

    @classmethod
    def of_stat(cls, st: os.stat_result) -> "SourceIdentity":
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    @classmethod
    def from_json(cls, doc: Mapping[str, int]) -> "SourceIdentity":
        return cls(doc["size"], doc["mtime_ns"], doc["ctime_ns"], doc["inode"])

    def same_file(self, other: "SourceIdentity") -> bool:
        """The same bytes of the same file: size, modification time and inode. ctime is recorded
        but not compared: a chmod, a new hard link or a backup tool's attribute change moves it
        without touching a byte."""
        return (self.size, self.mtime_ns, self.inode) == (other.size, other.mtime_ns, other.inode)

    def to_json(self) -> dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "ctime_ns": self.ctime_ns, "inode": self.inode}


def _count(value: object) -> bool:
    """A non-negative whole number (JSON's true and false are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _output_name(name: object) -> bool:
    """A path below OUT, as records write them: no empty, '.' or '..' part, not absolute."""
    return isinstance(name, str) and all(part not in ("", ".", "..") for part in name.split("/"))


def _identity(value: object) -> bool:
    """An identity as :meth:`SourceIdentity.to_json` writes it."""
    return isinstance(value, dict) and all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
                                           for k in ("size", "mtime_ns", "ctime_ns", "inode"))


def _valid(record: dict) -> bool:
    """Whether a record (of a version read) holds what one holds, each field of its type."""
    source, outputs = record.get("source"), record.get("outputs")
    return (isinstance(record.get("model"), str) and isinstance(record.get("options"), dict)
            and isinstance(source, dict) and _count(source.get("size")) and isinstance(source.get("mtime_ns"), int)
            and _count(record.get("frames"))
            and isinstance(outputs, list) and len(outputs) > 0
            and all(isinstance(o, dict) and _output_name(o.get("name")) and _count(o.get("size"))
                    and isinstance(o.get(DIGEST), str) and _SHA256.fullmatch(o[DIGEST]) is not None
                    and (_IDENTITY not in o or _identity(o[_IDENTITY]))
                    for o in outputs))


@dataclass(frozen=True)
class Resume:
    """A video's resume verdict: its frames when complete, else why it is redone."""

    frames: int | None
    reason: str | None = None

    @property
    def complete(self) -> bool:
        return self.frames is not None


def _file_digest(f) -> str:
    h = hashlib.new(DIGEST)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _canonical(options: Mapping[str, object]) -> dict[str, object]:
    """Options as they read back from JSON, so a tuple and a list compare equal."""
    return json.loads(json.dumps(dict(options), sort_keys=True, default=str))


def redo_lines(verdicts: Iterable[Resume]) -> list[str]:
    """One line per reason: "redoing 3 videos: the model changed"."""
    counts = Counter(v.reason for v in verdicts if v.reason is not None)
    return [f"redoing {n} video{'s' if n != 1 else ''}: {reason}" for reason, n in counts.most_common()]


class ResumeLedger:
    """Records of completed videos, keyed by the same (possibly shortened) names as the outputs."""

    def __init__(self, out: Path, model_digest: str, options: Mapping[str, object] | None = None, *,
                 verify: bool = False) -> None:
        """``verify``: hash every output against its recorded SHA-256, even one whose identity
        (size, mtime, ctime, inode) is the recorded one."""
        if not model_digest:
            raise ValueError("the resume ledger needs the model's digest (ModelInfo.digest)")
        self.tree = OutTree(Path(out))
        self.model_digest = model_digest
        self.options = _canonical(options or {})
        self.verify = verify

    def _record_parts(self, rel: str) -> tuple[str, ...]:
        stem = self.tree.stem(rel)
        return (STATE_DIR, "done", *stem[:-1], f"{stem[-1]}.json")

    def _name(self, path: Path) -> str:
        return Path(path).relative_to(self.tree.out).as_posix()

    def check(self, video: Path, rel: str, outputs: list[Path]) -> Resume:
        """Complete (with its frames) only if a record matches model, options and source and
        every output has the recorded size and digest; else the first reason that fails."""
        return self._checked(rel, lambda record: self._compare(record, video, outputs))

    def _compare(self, record: dict, video: Path, outputs: list[Path]) -> Resume:
        if record["model"] != self.model_digest:
            return Resume(None, MODEL_CHANGED)
        theirs = record["options"]
        changed = sorted(k for k in set(theirs) | set(self.options) if theirs.get(k) != self.options.get(k))
        if changed:
            return Resume(None, f"{OPTIONS_CHANGED}: {', '.join(changed)}")
        return self._compare_source(record, video, outputs)

    def check_source(self, video: Path, rel: str, outputs: list[Path]) -> Resume:
        """For a reader of the results (``client.render``), whatever model and options made them:
        complete only if ``video`` is the source they were made from (its size and mtime) and
        every output has the recorded size and digest; else the first reason that fails."""
        return self._checked(rel, lambda record: self._compare_source(record, video, outputs))

    def _checked(self, rel: str, compare: Callable[[dict], Resume]) -> Resume:
        record = self._read(rel)
        if record is None:
            return Resume(None, NO_RECORD)
        if not _valid(record):
            return Resume(None, RECORD_INVALID)
        try:
            return compare(record)
        except (KeyError, TypeError, ValueError, AttributeError):
            return Resume(None, RECORD_INVALID)  # damaged in a way the checks above did not foresee

    def _compare_source(self, record: dict, video: Path, outputs: list[Path]) -> Resume:
        try:
            st = video.stat()
        except OSError:
            return Resume(None, SOURCE_CHANGED)
        source = record["source"]
        if (source["size"], source["mtime_ns"]) != (st.st_size, st.st_mtime_ns):
            return Resume(None, SOURCE_CHANGED)
        recorded = record["outputs"]
        if [o["name"] for o in recorded] != [self._name(p) for p in outputs]:
            return Resume(None, OUTPUT_MISSING)
        for o in recorded:
            verdict = self._verify(o)
            if verdict is not None:
                return Resume(None, verdict)
        return Resume(int(record["frames"]), None)

    def completed_frames(self, video: Path, rel: str, outputs: list[Path]) -> int | None:
        """``check(...).frames``: for callers that need no reason."""
        return self.check(video, rel, outputs).frames

    def _read(self, rel: str) -> dict | None:
        f = self.tree.open_regular(self._record_parts(rel))
        if f is None:
            return None
        try:
            with f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            return {}  # unreadable or not JSON: invalid
        if not isinstance(record, dict):
            return {}
        if record.get("version") not in _READABLE:
            return None  # an older framestream's record, or not ours: redo
        return record

    def _unchanged(self, recorded: dict) -> bool:
        """Whether the output is the regular file its record saw in place, by one ``lstat`` (no
        open, no byte read). False when the record has no identity or ``verify`` asks for bytes."""
        if self.verify or _IDENTITY not in recorded:
            return False
        try:
            st = os.lstat(self.tree.out / recorded["name"])
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and SourceIdentity.of_stat(st) == SourceIdentity.from_json(recorded[_IDENTITY])

    def _verify(self, recorded: dict) -> str | None:
        if self._unchanged(recorded):
            return None  # untouched since its record was written: the recorded bytes, unread
        f = self.tree.open_regular(tuple(recorded["name"].split("/")))
        if f is None:
            return OUTPUT_MISSING
        with f:
            if os.fstat(f.fileno()).st_size != recorded["size"]:
                return OUTPUT_DAMAGED
            try:
                same = _file_digest(f) == recorded[DIGEST]
            except OSError:
                return OUTPUT_DAMAGED
        return None if same else OUTPUT_DAMAGED

    def record(self, video: Path, rel: str, frames: int, outputs: list[Output], *,
               source: SourceIdentity | None = None) -> None:
        """Remember a completed video now (:meth:`stage`, then commit); the outputs were fsynced
        and renamed into place before."""
        self.stage(video, rel, frames, outputs, source=source).commit()

    def stage(self, video: Path, rel: str, frames: int, outputs: list[Output], *,
              source: SourceIdentity | None = None) -> Staged:
        """A video's record written beside its place, committed by the caller once the outputs
        are in place. ``source``: the identity taken when its decoding started (default: now)."""
        if source is None:
            try:
                source = SourceIdentity.of(video)
            except OSError as e:
                raise OutputError(f"{display_rel(rel)} changed during the run ({e.strerror}); "
                                  "rerun to redo it") from e
        body = {
            "version": _VERSION,
            "model": self.model_digest,
            "options": self.options,
            "source": source.to_json(),
            "frames": frames,
            "outputs": [{"name": self._name(o.path), "size": o.size, DIGEST: o.sha256} for o in outputs],
        }
        staged = self.tree.stage_file(self._record_parts(rel), json.dumps(body).encode())
        return _RecordStaged(staged.tree, staged.parts, staged.tmp, staged.output, body=body,
                             outputs=tuple(o.path for o in outputs))

    def forget(self, rel: str) -> None:
        self.tree.remove(self._record_parts(rel))


@dataclass
class _RecordStaged(Staged):
    """A record staged before its outputs are renamed into place (so a failure leaves the earlier
    ones as they were) and completed at its commit, once they are: each output's identity in
    place is written into the staged record, then it is renamed into place. The identity is
    taken then because a rename moves a file's ctime. Without identities (a commit never made,
    a crash) nothing is lost: a record without them has its outputs hashed."""

    body: dict = field(default_factory=dict)
    outputs: tuple[Path, ...] = ()

    def commit(self) -> None:
        with boundary(str(self.output.path), self.tree.out):
            identities = [SourceIdentity.of_stat(os.lstat(p)) for p in self.outputs]
            outputs = [{**o, _IDENTITY: i.to_json()} for o, i in zip(self.body["outputs"], identities)]
            data = json.dumps({**self.body, "outputs": outputs}).encode()
            d = self.tree.open_dir(self.parts[:-1], create=False)
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            finally:
                os.close(d)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        super().commit()
