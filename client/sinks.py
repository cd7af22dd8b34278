"""Where results go: one JSON-lines file per video, or one Parquet dataset.

Every output is written under a hidden temporary name, fsynced, and renamed only when its
video is complete; a video that failed keeps what was written in a partial output. Nothing
that looks complete ever is incomplete. Names, symlinks and OS errors are handled by
:mod:`client.outfiles`: a video name too long for the file system gets a shortened output name
(``Sink.outputs`` says which), a symlink inside OUT is refused, a full disk raises
:class:`~client.errors.OutputStorageError` and any other write failure
:class:`~client.errors.OutputError`, from every method below.

Every processed frame is recorded in every format, with or without detections. A video
that completes in one format removes its outputs of the other format, made by an earlier run
with other options: OUT then holds one current result per video, the one the resume ledger
vouches for, and a Parquet dataset never mixes two runs' results. A video that fails (or a
run that is stopped) replaces nothing: the earlier complete output, its sidecar and its
record stay as they were, and the next run redoes the video because its options differ.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Mapping, Protocol

import numpy as np

from .contract import DETECTION_COLUMNS
from .defaults import PARQUET_ROWS_PER_GROUP
from .detections import Detections
from .errors import FramestreamError, OutputError, OutputStorageError, PostProcessingError, UsageError
from .jsonl import frame_line
from .outfiles import HashingFile, Output, OutTree, Staged, boundary, display_rel, translate

__all__ = ["Sink", "FileWriter", "Stage", "PostStep", "PostProcessingWriter", "Output", "JsonlSink", "ParquetSink", "make_sink", "display_rel", "FORMATS",
           "PARQUET_COLUMNS", "NAMES_KEY", "PartialMismatch"]

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")
Parts = tuple[str, ...]


def _layout(kind: str, tree: OutTree, rel: str) -> tuple[Parts, Parts]:
    """A video's final and partial output, as components below OUT."""
    if kind == "jsonl":
        *dirs, name = tree.stem(rel)
        return (*dirs, f"{name}.jsonl"), (*dirs, f"{name}.jsonl.partial")  # a final name always ends .jsonl
    *dirs, name = tree.stem(rel, dataset=True)
    return ("detections", *dirs, f"{name}.parquet"), ("partial", *dirs, f"{name}.parquet")


class PartialMismatch(FramestreamError):
    """A frame inferred again does not write the line the partial output it continues holds."""


Stage = Callable[[list[Output]], Staged]  # stages a file that goes with a video's outputs (its sidecar, its record)


class FileWriter(Protocol):
    def write(self, index: int, t_s: float, detections: Detections) -> None:
        """Record frame ``index`` at ``t_s`` seconds with its detections (maybe none)."""
        ...

    def complete(self, stages: Sequence[Stage] = ()) -> list[Output]:
        """Publish the output under its final name together with what ``stages`` stage for it;
        the files written, with size and digest."""
        ...

    def fail(self) -> Path | None:
        """Keep what was written as a partial output (or nothing); return its path."""
        ...

    def carry(self, lines: Sequence[bytes], frames: Sequence[int], keep: int, counts: Mapping[int, int]) -> None:
        """Continue an earlier partial output before any frame is written (JSON lines only)."""
        ...

    def write_line(self, line: bytes) -> None:
        """Record a frame's line as an earlier run wrote it (JSON lines only)."""
        ...

    def render(self, index: int, t_s: float, detections: Detections) -> bytes:
        """The line ``write`` would write, written nowhere (JSON lines only)."""
        ...

    def discard(self) -> None:
        """Drop what was written; every earlier file of the video stays as it was."""
        ...

    @property
    def class_counts(self) -> Mapping[int, int]:
        """The detections written so far, per class id (what the output holds)."""
        ...


class Sink(Protocol):
    def open(self, rel: str) -> FileWriter: ...

    def outputs(self, rel: str) -> list[Path]:
        """The final outputs of a video (shortened names included), for the resume check."""
        ...


PostStep = Callable[[float, Detections], Detections]  # a video's detections at t seconds, changed


class PostProcessingWriter:
    """A video's writer whose detections pass through ``step`` (a filter, a tracker) first. A
    failure of the step costs this video, not the run: a :class:`PostProcessingError`; the
    writer's own errors (a full disk) pass through unchanged."""

    def __init__(self, writer: FileWriter, step: PostStep) -> None:
        self._writer, self._step = writer, step

    def write(self, index: int, t_s: float, detections: Detections) -> None:
        try:
            changed = self._step(t_s, detections)
        except Exception as e:  # a bug in the step (ours or a library's)
            raise PostProcessingError(f"post-processing failed: {type(e).__name__}: {e}") from e
        self._writer.write(index, t_s, changed)

    def complete(self, stages: Sequence[Stage] = ()) -> list[Output]:
        return self._writer.complete(stages)

    def fail(self) -> Path | None:
        return self._writer.fail()

    def carry(self, lines: Sequence[bytes], frames: Sequence[int], keep: int, counts: Mapping[int, int]) -> None:
        self._writer.carry(lines, frames, keep, counts)

    def write_line(self, line: bytes) -> None:
        self._writer.write_line(line)  # kept from an earlier run: the step was applied then

    def render(self, index: int, t_s: float, detections: Detections) -> bytes:
        try:
            changed = self._step(t_s, detections)
        except Exception as e:
            raise PostProcessingError(f"post-processing failed: {type(e).__name__}: {e}") from e
        return self._writer.render(index, t_s, changed)

    def discard(self) -> None:
        self._writer.discard()

    @property
    def class_counts(self) -> Mapping[int, int]:
        return self._writer.class_counts  # counted where written: after the step's changes


class _Writer:
    """Writes a temporary of this process beside the final output; ``complete`` publishes it,
    ``fail`` keeps it as the partial output. Refuses at open a symlink at the final or partial
    place. An earlier run's output of the video (in either format) is left alone until this one
    is complete and recorded: a rerun that fails or is stopped loses nothing."""

    kind = ""

    def __init__(self, tree: OutTree, rel: str) -> None:
        self.tree, self.rel = tree, rel
        self.final, self.partial = _layout(self.kind, tree, rel)
        self.stale = [parts for k in FORMATS if k != self.kind for parts in _layout(k, tree, rel)]
        self.count = 0  # frames written
        self.class_counts: Counter[int] = Counter()  # detections written, per class id (after any filter)
        self._broken = False  # a write failed: what the temporary holds cannot be trusted
        self._floor = 0  # frames of the earlier partial this one continues: kept unless passed
        self._expect: dict[int, bytes] = {}  # frame index -> the line the earlier partial holds
        self._state = "writing"  # then "sealed" (temporary closed), "published", "partial" or "done"
        with boundary(str(self.final_path), tree.out):
            self._dir = tree.open_dir(self.final[:-1], create=True)
            try:
                tree.check_replaceable(self.final, self._dir)
                self._check_partial_place()
                self._tmp, fd = tree.create_hidden(self.final[-1], self._dir)
            except BaseException:
                os.close(self._dir)
                raise
        self._dir_open = True
        self._file = HashingFile(fd)

    @property
    def final_path(self) -> Path:
        return self.tree.path(self.final)

    @property
    def partial_path(self) -> Path:
        return self.tree.path(self.partial)

    def _check_partial_place(self) -> None:
        try:
            d = self.tree.open_dir(self.partial[:-1], create=False)
        except FileNotFoundError:
            return
        try:
            self.tree.check_replaceable(self.partial, d)
        finally:
            os.close(d)

    def write(self, index: int, t_s: float, detections: Detections) -> None:
        if self._state != "writing":
            raise RuntimeError(f"{self.final_path}: written after complete() or fail()")
        try:
            self._write(index, t_s, detections)
        except OSError as e:
            self._broken = True
            raise translate(e, str(self.final_path), self.tree.out) from e
        self.count += 1
        if len(detections):
            self.class_counts.update(detections.class_id.tolist())

    def _write(self, index: int, t_s: float, detections: Detections) -> None:
        raise NotImplementedError

    def carry(self, lines: Sequence[bytes], frames: Sequence[int], keep: int, counts: Mapping[int, int]) -> None:
        """Continue an earlier partial output (its ``lines`` of ``frames``, :mod:`client.partials`):
        its first ``keep`` lines are copied as they are (``counts``: their detections per class);
        each later frame written must give the very line it holds (else :class:`PartialMismatch`),
        and until this output holds as many frames as it does, a failure keeps that partial
        instead of this shorter one."""
        raise PartialMismatch(f"a {self.kind} partial output is not continued")

    def write_line(self, line: bytes) -> None:
        """Record a frame's line as an earlier run wrote it (a kept segment of a split video)."""
        raise PartialMismatch(f"a {self.kind} partial output is not continued")

    def render(self, index: int, t_s: float, detections: Detections) -> bytes:
        """The line :meth:`write` would write for this frame, written nowhere (kept for a rerun)."""
        raise PartialMismatch(f"a {self.kind} partial output is not continued")

    def discard(self) -> None:
        """Drop what this writer wrote (never raises); every earlier file of the video stays."""
        if self._state in ("writing", "sealed"):
            self._file.close_quietly()
            with suppress(OSError, OutputError):
                self.tree.remove((*self.final[:-1], self._tmp))
        self._state = "done"
        self._close_dir()

    def _end(self) -> None:
        """Finish the format's bytes (a Parquet footer); nothing for JSON lines."""

    def complete(self, stages: Sequence[Stage] = ()) -> list[Output]:
        """Seal the temporary (fsynced), stage each of ``stages`` (a sidecar, then the resume
        record), then rename the output into place and commit the staged files in order: the
        last (the record) is the commit point. A failure before the rename leaves every earlier
        file of the video as it was (``fail`` then keeps the frames as the partial output); a
        failure after it moves the new output to the partial place and puts the earlier output
        and sidecar back (kept under hidden links until the record is committed), so nothing
        looks complete without its record and nothing earlier is lost. A crash in between leaves
        an output its record does not describe (size and digest), which the next run redoes."""
        if self._state != "writing" or self._broken:
            raise OutputError(f"{self.final_path}: cannot complete an output whose writing failed or ended")
        where = str(self.final_path)
        try:
            self._end()
            digest = self._file.sync_close()
        except OSError as e:
            self._broken = True
            raise translate(e, where, self.tree.out) from e
        self._state = "sealed"
        outputs = [Output(self.final_path, self._file.size, digest)]
        staged: list[Staged] = []
        aside: str | None = None  # the earlier output, kept under a hidden link until the record is committed
        try:
            for stage in stages:
                staged.append(stage(outputs))
            for s in staged:
                s.keep_earlier()
            with boundary(where, self.tree.out):
                aside = self.tree.link_aside(self.final[-1], self._dir)
                os.replace(self._tmp, self.final[-1], src_dir_fd=self._dir, dst_dir_fd=self._dir)
                os.fsync(self._dir)  # the rename is durable before the record vouches for it
        except BaseException:
            for s in staged:
                s.discard()
            self._drop(aside)
            raise
        self._state = "published"
        committed: list[Staged] = []
        try:
            for s in staged:
                s.commit()
                committed.append(s)
        except BaseException:
            self._retract(staged, committed, aside)
            raise
        self._state = "done"
        for s in staged:
            s.release()
        self._drop(aside)
        self._tidy()
        self._close_dir()
        return outputs

    def _retract(self, staged: list[Staged], committed: list[Staged], aside: str | None) -> None:
        """A staged file could not be committed after the output was published: the new output
        goes to the partial place, what was committed for it is undone, and the earlier output
        (``aside``, if there was one) goes back in place: the earlier record describes it again."""
        for s in staged:
            if s in committed:
                s.restore()
            else:
                s.discard()
        try:
            d = self.tree.open_dir(self.partial[:-1], create=True)
            try:
                os.replace(self.final[-1], self.partial[-1], src_dir_fd=self._dir, dst_dir_fd=d)
            finally:
                os.close(d)
            self._state = "partial"
        except (OSError, OutputError) as e:
            if aside is None:
                log.error("%s: could not move the unrecorded output aside (%s); its record does not describe it, "
                          "so the next run redoes it", display_rel(self.rel), e)
        if aside is not None:
            try:
                os.replace(aside, self.final[-1], src_dir_fd=self._dir, dst_dir_fd=self._dir)
                os.fsync(self._dir)
            except OSError as e:
                self._drop(aside)
                log.error("%s: could not put the earlier output back (%s); its record does not describe what "
                          "is there, so the next run redoes it", display_rel(self.rel), e)

    def _drop(self, aside: str | None) -> None:
        """Remove the hidden link to the earlier output (never raises)."""
        if aside is not None:
            with suppress(OSError, OutputError):
                self.tree.remove((*self.final[:-1], aside))

    def _tidy(self) -> None:
        """After success: an earlier attempt's partial output and the other format's outputs go."""
        try:
            self.tree.remove(self.partial)
            self._remove_stale()
        except (OSError, OutputError) as e:
            log.warning("%s: complete, but an older file could not be removed: %s", display_rel(self.rel), e)

    def fail(self) -> Path | None:
        """The frames written so far go to the partial output (replacing an earlier attempt's);
        an earlier run's complete output, its sidecar and record are left as they are. None when
        nothing trustworthy was written: then only this run's temporary goes, and an earlier
        attempt's partial output stays."""
        if self._state == "done":
            return None
        if self._state == "partial":
            self._state = "done"
            self._close_dir()
            return self.partial_path
        try:
            with boundary(str(self.partial_path), self.tree.out):
                kept = self._close_after_failure() if self._state == "writing" else self._state == "sealed"
                if kept and 0 < self.count < self._floor:  # the earlier partial holds more: it stays
                    self.tree.remove((*self.final[:-1], self._tmp))
                    return self.partial_path
                if not kept or self.count == 0:
                    self.tree.remove((*self.final[:-1], self._tmp))
                    return None
                try:
                    d = self.tree.open_dir(self.partial[:-1], create=True)
                except OutputStorageError:  # OUT is gone: nothing to keep the frames in
                    return None
                try:
                    os.replace(self._tmp, self.partial[-1], src_dir_fd=self._dir, dst_dir_fd=d)
                finally:
                    os.close(d)
                return self.partial_path
        finally:
            self._state = "done"
            self._close_dir()

    def _close_after_failure(self) -> bool:
        """Close the temporary; False if its bytes cannot be trusted."""
        if self._broken:
            self._file.close_quietly()
            return False
        try:
            self._end()
        except OSError:
            self._file.close_quietly()
            return False
        return self._file.close_quietly()

    def _remove_stale(self) -> None:
        for parts in self.stale:
            if self.tree.remove(parts):
                log.info("%s: removed %s, an output of an earlier run in another format",
                         display_rel(self.rel), self.tree.path(parts))

    def _close_dir(self) -> None:
        if self._dir_open:
            self._dir_open = False
            os.close(self._dir)


class _JsonlWriter(_Writer):
    kind = "jsonl"

    def carry(self, lines: Sequence[bytes], frames: Sequence[int], keep: int, counts: Mapping[int, int]) -> None:
        if self._state != "writing" or self.count:
            raise RuntimeError(f"{self.final_path}: a partial output is carried before any frame")
        try:
            for line in lines[:keep]:
                self._file.write(line)
        except OSError as e:
            self._broken = True
            raise translate(e, str(self.final_path), self.tree.out) from e
        self.count = keep
        self.class_counts.update(counts)
        self._floor = len(lines)
        self._expect = dict(zip(frames[keep:], lines[keep:]))

    def write_line(self, line: bytes) -> None:
        if self._state != "writing":
            raise RuntimeError(f"{self.final_path}: written after complete() or fail()")
        try:
            self._file.write(line)
        except OSError as e:
            self._broken = True
            raise translate(e, str(self.final_path), self.tree.out) from e
        self.count += 1
        self.class_counts.update(int(d[5]) for d in json.loads(line)["detections"])

    def render(self, index: int, t_s: float, detections: Detections) -> bytes:
        return frame_line(index, t_s, detections)

    def _write(self, index: int, t_s: float, detections: Detections) -> None:
        line = frame_line(index, t_s, detections)
        expected = self._expect.pop(index, None)
        if expected is not None and line != expected:
            raise PartialMismatch(f"frame {index}: {line[:200]!r} where its partial holds {expected[:200]!r}")
        self._file.write(line)


class _FileSink:
    kind = ""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.tree = OutTree(self.out)

    def outputs(self, rel: str) -> list[Path]:
        return [self.tree.path(_layout(self.kind, self.tree, rel)[0])]

    def partial(self, rel: str) -> Path:
        """Where a video's partial output is kept."""
        return self.tree.path(_layout(self.kind, self.tree, rel)[1])


class JsonlSink(_FileSink):
    """``OUT/<path relative to DIR>.jsonl``: one object per processed frame (``detections``
    empty when nothing was found); the partial output is ``OUT/<path>.jsonl.partial``, a name
    no video's output can have (they all end ``.jsonl``) and that ``*.jsonl`` does not match."""

    kind = "jsonl"

    def open(self, rel: str) -> _JsonlWriter:
        return _JsonlWriter(self.tree, rel)


_SCHEMA_FIELDS = ("video", "frame", "t", *DETECTION_COLUMNS, "class_name", "track_id")
PARQUET_COLUMNS = _SCHEMA_FIELDS  # in the resume options: files of an older schema are redone, not mixed in
NAMES_KEY = b"framestream.names"  # the schema metadata holding the model's class names (JSON, id -> name)


def _schema(names: Mapping[int, str]):
    import pyarrow as pa

    kinds = [pa.string(), pa.int64(), pa.float64()] + [pa.float32()] * 5 + [pa.int32(), pa.string(), pa.int32()]
    metadata = {NAMES_KEY: json.dumps({str(k): v for k, v in sorted(names.items())}).encode()}
    return pa.schema([pa.field(name, kind, nullable=name not in _SCHEMA_FIELDS[:3])
                      for name, kind in zip(_SCHEMA_FIELDS, kinds)], metadata=metadata)


class _ParquetWriter(_Writer):
    """Buffers frames' arrays, not rows: a row group's columns are built with NumPy (a Python
    tuple per detection capped the writer near 25,000 frames/s at 20 detections a frame)."""

    kind = "parquet"

    def __init__(self, tree: OutTree, rel: str, names: Mapping[int, str]) -> None:
        super().__init__(tree, rel)
        self.video = display_rel(rel)  # Parquet strings are UTF-8: undecodable bytes as \xNN
        self.names = names
        self._frames: list[tuple[int, float, Detections]] = []
        self._rows = 0  # rows the buffered frames make (a frame without detections is one)
        self._writer = None

    def _write(self, index: int, t_s: float, detections: Detections) -> None:
        self._frames.append((index, t_s, detections))
        self._rows += len(detections) or 1
        if self._rows >= PARQUET_ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _schema(self.names)
        table = pa.table(_columns(self.video, self._frames, schema, self.names), schema=schema)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._file.raw, schema)
        self._writer.write_table(table)
        self._frames.clear()
        self._rows = 0

    def _end(self) -> None:
        self._flush()
        self._writer.close()
        self._file.rehash()


_NULL_XYXY, _NULL_SCORE, _NULL_CLASS = np.zeros((1, 4), np.float32), np.zeros(1, np.float32), np.zeros(1, np.int32)


def _stack(parts: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    return np.concatenate(parts) if parts else like[:0]


def _columns(video: str, frames: list[tuple[int, float, Detections]], schema, names: Mapping[int, str]) -> list:
    """The buffered frames as Arrow columns: one row per detection, one null row per frame
    without any (its detection columns masked); ``class_name`` looked up once per distinct id;
    ``track_id`` null where no tracker ran."""
    import pyarrow as pa

    counts = np.array([len(d) for _, _, d in frames], dtype=np.int64)
    rows = np.maximum(counts, 1)
    n = int(rows.sum())
    frame = np.repeat(np.array([i for i, _, _ in frames], dtype=np.int64), rows)
    t = np.repeat(np.array([t_s for _, t_s, _ in frames], dtype=np.float64), rows)
    null = np.repeat(counts == 0, rows)
    xyxy = _stack([d.xyxy if len(d) else _NULL_XYXY for _, _, d in frames], _NULL_XYXY)
    score = _stack([d.confidence if len(d) else _NULL_SCORE for _, _, d in frames], _NULL_SCORE)
    class_id = _stack([d.class_id if len(d) else _NULL_CLASS for _, _, d in frames], _NULL_CLASS)
    track_id, untracked = _track_column(frames)
    mask = null if null.any() else None
    detection = [*(xyxy[:, j] for j in range(4)), score, class_id]
    ids, where = np.unique(class_id, return_inverse=True)
    class_name = np.array([names.get(int(i)) for i in ids], dtype=object)[where.reshape(-1)]
    types = [f.type for f in schema]
    return [pa.repeat(pa.scalar(video, pa.string()), n), pa.array(frame, types[1]), pa.array(t, types[2]),
            *(pa.array(col, type=kind, mask=mask) for col, kind in zip(detection, types[3:-2])),
            pa.array(class_name, type=types[-2], mask=mask),
            pa.array(track_id, type=types[-1], mask=untracked if untracked.any() else None)]


def _track_column(frames: list[tuple[int, float, Detections]]) -> tuple[np.ndarray, np.ndarray]:
    """Track ids row by row, and where there is none to record (no tracker ran, or a frame
    without detections): null in the dataset. -1 (a detection no track holds) is kept."""
    ids, nulls = [], []
    for _, _, d in frames:
        rows, tracked = max(len(d), 1), d.track_id is not None and len(d) > 0
        ids.append(d.track_id if tracked else np.zeros(rows, np.int32))
        nulls.append(np.full(rows, not tracked))
    return _stack(ids, _NULL_CLASS), _stack(nulls, np.zeros(0, bool))


class ParquetSink(_FileSink):
    """One dataset ``OUT/detections/``: a file per video, one row per detection, and one row
    per processed frame without detections (its detection columns null), so every inferred
    frame is in the dataset. A name part starting with '_' (which dataset readers skip) is
    written as '%_', one starting with '%' as '%%'. Partial outputs go to ``OUT/partial/``
    (outside the dataset). ``class_name`` holds the model's name of each ``class_id`` (null
    for an id the model does not name), and the schema's metadata all the names
    (``framestream.names``)."""

    kind = "parquet"

    def __init__(self, out: Path, names: Mapping[int, str] | None = None) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise UsageError("--format parquet needs pyarrow: pip install 'framestream[parquet]'") from e
        super().__init__(out)
        self.names = dict(names or {})

    def open(self, rel: str) -> _ParquetWriter:
        return _ParquetWriter(self.tree, rel, self.names)


def make_sink(kind: str, out: Path, names: Mapping[int, str] | None = None) -> Sink:
    """The sink of ``kind``; ``names``: the model's class names (Parquet stores them)."""
    if kind == "jsonl":
        return JsonlSink(out)
    if kind == "parquet":
        return ParquetSink(out, names)
    raise UsageError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
