"""What a run left in OUT, read back: its summary, each video's source and detections.

``summary.json`` lists every video with its status and its complete outputs (relative to
OUT): a ``.jsonl`` file or a file of the Parquet dataset, whichever backend made them. The
source is the run's input root joined with the video's relative path (``--source`` says
where it is now, if it moved), and the resume ledger (:mod:`client.resume`) says whether that
file is still the one the detections were made from and whether the output is intact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detections import Detections
from .errors import UsageError
from .report import OK
from .run_summary import FileEntry, RunSummary
from .tracking import NO_TRACK

__all__ = ["FrameRows", "Video", "RunOutputs", "load_run", "read_frames"]


@dataclass(frozen=True)
class FrameRows:
    """One inferred frame: its number, time and detections in source pixels (as a viewer sees it),
    as the strict type the sinks took: an output read back is what was written (float32 boxes
    and scores; track ids, ``NO_TRACK`` for a row no track held, when a tracker ran)."""

    index: int
    t_s: float
    detections: Detections
    score_places: int | None = None  # the output held scores rounded to this many places (JSON lines: 4)


@dataclass(frozen=True)
class Video:
    rel: str  # the video's path relative to the run's input root, as summary.json lists it
    status: str
    frames: int
    output: Path | None  # its complete output (None: the run left none)
    source: Path | None  # where the source should be (None: the run's root is unknown)


@dataclass(frozen=True)
class RunOutputs:
    out: Path
    summary: RunSummary
    videos: tuple[Video, ...]

    @property
    def names(self) -> dict[int, str]:
        return self.summary.class_names

    @property
    def digest(self) -> str:
        return self.summary.model_digest or "unknown"


def load_run(out: Path, source: Path | None = None) -> RunOutputs:
    """OUT's summary and videos; UsageError when OUT holds no run. ``source``: the folder the
    videos are in now (default: the root the run recorded)."""
    out = Path(out)
    path = out / "summary.json"
    if not out.is_dir():
        raise UsageError(f"{out}: not a directory; give the --out folder of a framestream run")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise UsageError(f"{out}: no summary.json, so no framestream run's outputs here; "
                         "run python -m client.bulk with --out there first") from e
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable ({e}); rerun the bulk command to rewrite it") from e
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: unreadable ({e}); rerun the bulk command to rewrite it") from e
    try:
        summary = RunSummary.from_json(raw)
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from e
    root = source if source is not None else summary.input_root
    return RunOutputs(out, summary, tuple(_video(out, root, f) for f in summary.files))


def _video(out: Path, root: Path | None, entry: FileEntry) -> Video:
    return Video(rel=entry.path, status=entry.status, frames=entry.frames,
                 output=out / entry.outputs[0] if entry.status == OK and entry.outputs else None,
                 source=root / entry.path if root is not None else None)


def read_frames(output: Path) -> list[FrameRows]:
    """Every inferred frame of one output (``.jsonl`` or ``.parquet``), in frame order."""
    frames = list(_read_parquet(output) if output.suffix == ".parquet" else _read_jsonl(output))
    frames.sort(key=lambda f: f.index)
    return frames


def _read_jsonl(path: Path) -> Iterator[FrameRows]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            tracks = d.get("track_ids")
            rows = d["detections"]
            yield FrameRows(int(d["frame"]), float(d["t"]),
                            _detections([r[:6] for r in rows],
                                        [r[6] if len(r) > 6 else tracks[i] if tracks else None
                                         for i, r in enumerate(rows)]), SCORE_PLACES)


SCORE_PLACES = 4  # what the JSON lines sink rounds scores to (client.jsonl)


def _detections(rows: list, tracks: list) -> Detections:
    """Rows of x1, y1, x2, y2, score, class_id and their track ids (None: no track) as
    :class:`Detections`; track ids only when some row has one (None reads as ``NO_TRACK``)."""
    if not rows:
        return Detections.empty()
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    track_id = (np.array([NO_TRACK if t is None else int(t) for t in tracks], np.int32)
                if any(t is not None for t in tracks) else None)
    return Detections(a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int32), track_id)


def _read_parquet(path: Path) -> Iterator[FrameRows]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise UsageError("reading Parquet outputs needs pyarrow: pip install 'framestream[parquet]'") from e
    cols = pq.read_table(path).to_pydict()
    tracks = cols.get("track_id") or [None] * len(cols["frame"])
    by_frame: dict[int, tuple[float, list[list[float]], list[int | None]]] = {}
    for i, index in enumerate(cols["frame"]):
        t, rows, track_ids = by_frame.setdefault(int(index), (float(cols["t"][i]), [], []))
        x1 = cols["x1"][i]
        if x1 is None or (isinstance(x1, float) and math.isnan(x1)):
            continue  # a frame without detections: one row, its detection columns null
        rows.append([float(x1), float(cols["y1"][i]), float(cols["x2"][i]), float(cols["y2"][i]),
                     float(cols["score"][i]), int(cols["class_id"][i])])
        track_ids.append(None if tracks[i] is None else int(tracks[i]))
    for index, (t, rows, track_ids) in by_frame.items():
        yield FrameRows(index, t, _detections(rows, track_ids))
