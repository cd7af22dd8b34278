"""The run report: ``summary.json`` for tools, a short table on stderr for people."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from .outfiles import display_rel

OK, ERROR, SKIPPED = "ok", "error", "skipped"
NOT_PROCESSED = "not_processed"  # the run stopped (interrupt, backend gone, disk full) before it started


@dataclass
class FileReport:
    path: str  # relative to DIR
    status: str
    frames: int = 0  # frames inferred
    seconds: float = 0.0
    error: str | None = None
    resumed: bool = False  # complete output from an earlier run, not redone
    partial_output: str | None = None  # relative to OUT
    outputs: list[str] = field(default_factory=list)  # complete outputs, relative to OUT
    segments: list[dict[str, object]] = field(default_factory=list)  # per segment: frames, seconds
    letterbox: str | None = None  # the model input the video got, "WxH"
    meta: str | None = None  # its sidecar OUT/<rel>.meta.json, relative to OUT

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = display_rel(self.path)  # names that are not UTF-8 stay readable JSON text
        d["seconds"] = round(self.seconds, 3)
        d["fps"] = round(self.fps, 2)
        return d


def totals(files: list[FileReport], wall_s: float) -> dict[str, object]:
    frames = sum(f.frames for f in files if not f.resumed)
    return {
        "files": len(files),
        OK: sum(f.status == OK for f in files),
        ERROR: sum(f.status == ERROR for f in files),
        SKIPPED: sum(f.status == SKIPPED for f in files),
        NOT_PROCESSED: sum(f.status == NOT_PROCESSED for f in files),
        "resumed": sum(f.resumed for f in files),
        "frames": frames,
        "wall_seconds": round(wall_s, 3),
        "fps": round(frames / wall_s, 2) if wall_s > 0 else 0.0,
    }


def print_schedule(schedule: dict[str, object], stream: TextIO) -> None:
    s = schedule
    print(
        f"schedule: {s['workers']} worker(s), {s['segments']} segment(s); makespan {s['makespan_s']:.1f} s, "
        f"lower bound {s['lower_bound_s']:.1f} s, efficiency {s['efficiency']:.2f}, "
        f"backend busy {100 * s['busy_fraction']:.0f}%",
        file=stream,
    )


def write_summary(out: Path, summary: dict[str, object], name: str = "summary.json") -> Path:
    """Atomically, and flushed to disk before it replaces the last one; the temporary is this
    process's own, as shards sharing OUT may write at the same time."""
    path = out / name
    tmp = out / f".{name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(summary, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def print_table(files: list[FileReport], summary_totals: dict[str, object], stream: TextIO) -> None:
    width = min(48, max([len(f.path) for f in files] + [4]))
    print(f"{'file':<{width}}  {'status':<7} {'frames':>7} {'fps':>7}  note", file=stream)
    for f in files:
        note = f.error or ("resumed" if f.resumed else "")
        name = f.path if len(f.path) <= width else "..." + f.path[-(width - 3):]
        print(f"{name:<{width}}  {f.status:<7} {f.frames:>7} {f.fps:>7.1f}  {note}", file=stream)
    t = summary_totals
    print(
        f"{t['files']} files: {t[OK]} ok ({t['resumed']} resumed), {t[ERROR]} error, {t[SKIPPED]} skipped"
        + (f", {t[NOT_PROCESSED]} not processed" if t[NOT_PROCESSED] else "") + "; "
        f"{t['frames']} frames in {t['wall_seconds']:.1f} s ({t['fps']:.1f} frames/s)",
        file=stream,
    )
