"""The run report: ``summary.json`` for tools, a short table on stderr for people."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Mapping, TextIO

from .outfiles import display_rel
from .terminal import printable
from .wording import counted

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
    detections: dict[str, int] | None = None  # per class name, in its output (after --classes/--conf); None: unknown
    frames_kept: int = 0  # of ``frames``, those carried over from its partial output (continued), not inferred now

    def share(self, run_frames: int) -> float | None:
        """This file's part of the frames inferred in this run (None: it inferred none now)."""
        if self.resumed or run_frames <= 0 or self.status in (SKIPPED, NOT_PROCESSED):
            return None
        return (self.frames - self.frames_kept) / run_frames

    def to_json(self, run_frames: int = 0) -> dict[str, object]:
        d = asdict(self)
        d["path"] = display_rel(self.path)  # names that are not UTF-8 stay readable JSON text
        d["seconds"] = round(self.seconds, 3)  # its own span; files overlap, so no per-file rate is given
        share = self.share(run_frames)
        d["share"] = round(share, 4) if share is not None else None
        return d


def detection_totals(files: list[FileReport]) -> dict[str, object]:
    """Detections in the complete outputs (ok files, resumed ones included), per class name, after
    the filters. ``detections_unknown``: ok files whose count is not known (resumed outputs of a
    version that did not record it), so a total is never a silent undercount."""
    by_class: Counter[str] = Counter()
    unknown = 0
    for f in files:
        if f.status != OK:
            continue
        if f.detections is None:
            unknown += 1
        else:
            by_class.update(f.detections)
    return {"detections": sum(by_class.values()), "detections_by_class": class_counts(by_class),
            "detections_unknown": unknown}


def named_counts(counts: Mapping[int, int], names: Mapping[int, str]) -> dict[str, int]:
    """Counts per class id as counts per class name (``class 7`` for an id the model does not name)."""
    named: Counter[str] = Counter()
    for cid, n in counts.items():
        named[names.get(int(cid), f"class {cid}")] += int(n)
    return class_counts(named)


def class_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Most found first, then by name: the order the summary and the last line show."""
    return dict(sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0])))


def detections_line(t: dict[str, object], limit: int = 8) -> str:
    """The run's last line: how many detections its outputs hold, per class."""
    by_class = dict(t.get("detections_by_class") or {})
    shown = ", ".join(f"{name} {n}" for name, n in list(by_class.items())[:limit])
    more = len(by_class) - limit
    text = f"detections: {t.get('detections', 0)} in the complete outputs"
    if shown:
        text += f" ({shown}{f', and {more} more classes' if more > 0 else ''})"
    unknown = int(t.get("detections_unknown") or 0)
    if unknown:
        text += (f"; unknown for {unknown} resumed file{'s' if unknown != 1 else ''} "
                 "(an older version's sidecar, without a count)")
    return text


def totals(files: list[FileReport], wall_s: float) -> dict[str, object]:
    frames = sum(f.frames - f.frames_kept for f in files if not f.resumed)  # inferred by this run
    continued = [f for f in files if f.frames_kept]
    return {
        "files": len(files),
        OK: sum(f.status == OK for f in files),
        ERROR: sum(f.status == ERROR for f in files),
        SKIPPED: sum(f.status == SKIPPED for f in files),
        NOT_PROCESSED: sum(f.status == NOT_PROCESSED for f in files),
        "resumed": sum(f.resumed for f in files),
        "continued": len(continued),  # from their partial outputs
        "frames_kept": sum(f.frames_kept for f in continued),
        "frames": frames,
        "wall_seconds": round(wall_s, 3),
        "fps": round(frames / wall_s, 2) if wall_s > 0 else 0.0,
        **detection_totals(files),
    }


def print_schedule(schedule: dict[str, object], stream: TextIO) -> None:
    s = schedule
    print(
        f"schedule: {s['workers']} worker(s), {s['segments']} segment(s); makespan {s['makespan_s']:.1f} s, "
        f"lower bound {s['lower_bound_s']:.1f} s, efficiency {s['efficiency']:.2f}, "
        f"backend busy {100 * s['busy_fraction']:.0f}%",
        file=stream,
    )


def print_table(files: list[FileReport], summary_totals: dict[str, object], stream: TextIO) -> None:
    """Per file: frames, its share of the run's frames, the letterbox it got; then the run's
    rate, the one throughput (files overlap, so a file has none of its own), and a legend."""
    t = summary_totals
    run_frames = int(t["frames"])
    width = min(48, max([len(printable(display_rel(f.path))) for f in files] + [4]))
    print(f"{'file':<{width}}  {'status':<7} {'frames':>7} {'share':>6}  {'letterbox':<9}  note", file=stream)
    for f in files:
        note = printable(f.error or ("resumed" if f.resumed else ""))  # names in it: control characters escaped
        path = printable(display_rel(f.path))
        name = path if len(path) <= width else "..." + path[-(width - 3):]
        share = f.share(run_frames)
        share_text = f"{100 * share:5.1f}%" if share is not None else "-"
        print(f"{name:<{width}}  {f.status:<7} {f.frames:>7} {share_text:>6}  {f.letterbox or '-':<9}  {note}",
              file=stream)
    print(
        f"{counted(t['files'], 'file')}: {t[OK]} ok ({t['resumed']} resumed), {t[ERROR]} error, {t[SKIPPED]} skipped"
        + (f", {t[NOT_PROCESSED]} not processed" if t[NOT_PROCESSED] else "") + "; "
        f"the run: {counted(t['frames'], 'frame')} in {t['wall_seconds']:.1f} s = {t['fps']:.1f} frames/s",
        file=stream,
    )
    shapes = Counter(f.letterbox for f in files if f.letterbox)
    if shapes:
        listed = ", ".join(f"{shape} ({n} video{'s' if n != 1 else ''})" for shape, n in sorted(shapes.items()))
        print(f"letterbox (model input, W x H; batches hold one shape): {listed}", file=stream)
    print("share: a file's part of the frames inferred in this run. Files are decoded and inferred side by "
          "side, so the run's rate is the only throughput; a file's own seconds overlap other files' "
          "(summary.json 'seconds').", file=stream)
