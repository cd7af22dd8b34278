"""Where results go: one JSON-lines file per video, or one Parquet dataset.

Every output is written under a temporary name and renamed only when its video is
complete; a video that failed keeps what was decoded in a ``.partial`` file. Nothing that
looks complete ever is incomplete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .contract import DETECTION_COLUMNS
from .errors import UsageError

__all__ = ["Sink", "FileWriter", "JsonlSink", "ParquetSink", "make_sink", "FORMATS"]

FORMATS = ("jsonl", "parquet")


class FileWriter(Protocol):
    def write(self, index: int, t: float, detections: np.ndarray) -> None: ...

    def complete(self) -> list[Path]:
        """Publish the output under its final name; return the files written."""
        ...

    def fail(self) -> Path | None:
        """Keep what was written as a partial output (or nothing); return its path."""
        ...


class Sink(Protocol):
    def open(self, rel: str) -> FileWriter: ...

    def outputs(self, rel: str) -> list[Path]:
        """The final outputs of a video, for the resume check."""
        ...


def _publish(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def _keep_partial(tmp: Path, partial: Path, frames: int) -> Path | None:
    """A failed video's frames go to its partial output; with no frame there is nothing to keep."""
    if frames == 0:
        tmp.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
        return None
    _publish(tmp, partial)
    return partial


class _AtomicWriter:
    """Writes to a hidden temporary file; ``complete`` publishes it, ``fail`` keeps it as partial."""

    def __init__(self, final: Path, partial: Path) -> None:
        self.final, self.partial = final, partial
        final.parent.mkdir(parents=True, exist_ok=True)
        # A leading '.' also hides the file from dataset readers until it is complete.
        self.tmp = final.with_name(f".{final.name}.tmp")
        self.count = 0  # frames written

    def _close(self) -> None:
        raise NotImplementedError

    def complete(self) -> list[Path]:
        self._close()
        _publish(self.tmp, self.final)
        self.partial.unlink(missing_ok=True)
        return [self.final]

    def fail(self) -> Path | None:
        self._close()
        self.final.unlink(missing_ok=True)  # an older complete output no longer matches the source
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        return _keep_partial(self.tmp, self.partial, self.count)


class _JsonlWriter(_AtomicWriter):
    def __init__(self, final: Path, partial: Path) -> None:
        super().__init__(final, partial)
        self._f = open(self.tmp, "w", encoding="utf-8")

    def write(self, index: int, t: float, detections: np.ndarray) -> None:
        self.count += 1
        rows = [[round(float(v), 2) for v in r[:4]] + [round(float(r[4]), 4), int(r[5])] for r in detections]
        self._f.write(json.dumps({"frame": index, "t": round(t, 6), "detections": rows}, separators=(",", ":")) + "\n")

    def _close(self) -> None:
        self._f.close()


class JsonlSink:
    """``OUT/<path relative to DIR>.jsonl``: one object per processed frame."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def outputs(self, rel: str) -> list[Path]:
        return [self.out / f"{rel}.jsonl"]

    def open(self, rel: str) -> _JsonlWriter:
        return _JsonlWriter(self.out / f"{rel}.jsonl", self.out / f"{rel}.partial.jsonl")


class _ParquetWriter(_AtomicWriter):
    _ROWS_PER_GROUP = 50_000

    def __init__(self, rel: str, final: Path, partial: Path) -> None:
        super().__init__(final, partial)
        self.rel = rel
        self._rows: list[tuple] = []
        self._writer = None

    def write(self, index: int, t: float, detections: np.ndarray) -> None:
        self.count += 1
        for r in detections:
            self._rows.append((self.rel, index, t, *map(float, r[:5]), int(r[5])))
        if len(self._rows) >= self._ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*self._rows)) if self._rows else [[]] * len(_SCHEMA_FIELDS)
        table = pa.table({name: pa.array(col, type=kind) for (name, kind), col in zip(_schema(), columns)})
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table)
        self._rows.clear()

    def _close(self) -> None:
        self._flush()
        self._writer.close()


_SCHEMA_FIELDS = ("video", "frame", "t", *DETECTION_COLUMNS)


def _schema():
    import pyarrow as pa

    kinds = [pa.string(), pa.int64(), pa.float64()] + [pa.float32()] * 5 + [pa.int32()]
    return list(zip(_SCHEMA_FIELDS, kinds))


class ParquetSink:
    """One dataset ``OUT/detections/``: a file per video, one row per detection."""

    def __init__(self, out: Path) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise UsageError("--format parquet needs pyarrow: pip install 'framestream[parquet]'") from e
        self.out = out

    def outputs(self, rel: str) -> list[Path]:
        return [self.out / "detections" / f"{rel}.parquet"]

    def open(self, rel: str) -> _ParquetWriter:
        return _ParquetWriter(rel, self.out / "detections" / f"{rel}.parquet", self.out / "partial" / f"{rel}.parquet")


def make_sink(kind: str, out: Path) -> Sink:
    if kind == "jsonl":
        return JsonlSink(out)
    if kind == "parquet":
        return ParquetSink(out)
    raise UsageError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
