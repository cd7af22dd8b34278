"""``OUT/report.html``: one self-contained page about a run, written at the end of every run.

Everything comes from ``summary.json`` and the outputs it lists, so the page can be rebuilt
at any time (``python -m client.render OUT --report-only``). The plots are drawn with
matplotlib's SVG backend and inlined, text as paths: the page loads nothing, from no network
and no other file. Sections: the run's overview (detections per class included), the per-file
table (no per-file rate or seconds: files are decoded side by side, so neither is a throughput;
resumed files marked in a column of their own), throughput over the run (averaged over a
window, so batches do not draw a comb, with the run's mean drawn and stated), the schedule as
a Gantt of segments per decoder (a legend for the files' colours, makespan and lower bound),
detections per class over time for each video (the first :data:`MAX_VIDEO_PLOTS`), and
Triton's figures when a server was used.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from .outfiles import OutTree, write_atomically
from .results import RunOutputs, load_run, read_frames
from .run_summary import RunSummary, Totals

__all__ = ["write_report", "render_html", "MAX_VIDEO_PLOTS", "REPORT_NAME"]

REPORT_NAME = "report.html"
MAX_VIDEO_PLOTS = 24  # videos with a detections plot; a run of thousands gets a page that still opens
_TOP_CLASSES = 6  # per video; the rest summed as "other"
_MAX_BINS = 300  # points per time series
_MAX_LEGEND_FILES = 12  # files named in the schedule's legend; the rest counted
_SMOOTH_MIN_S = 1.0  # the throughput plot's window: at least this, and at least two buckets
_SMOOTH_RUN_FRACTION = 0.02  # and at least this part of the run (a day's run: half-hour windows)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
td.n{text-align:right}tr.error td{background:#fde8e8}tr.not_processed td{background:#fff4d6}
tr.resumed td{color:#555}
.plot svg{max-width:100%;height:auto}.note{color:#666}
"""


def write_report(out: Path) -> Path:
    """Write ``OUT/report.html`` atomically from the run in OUT; returns its path."""
    page = render_html(load_run(Path(out)))
    return write_atomically(OutTree(Path(out)), (REPORT_NAME,), lambda f: f.write(page.encode("utf-8")))


def render_html(run: RunOutputs) -> str:
    s = run.summary
    parts = [f"<h1>framestream run: {html.escape(str(run.out))}</h1>", _overview(s),
             "<h2>Files</h2>", _file_table(s),
             "<h2>Throughput over the run</h2>", _throughput(s),
             "<h2>Schedule</h2>", _gantt(s),
             "<h2>Detections per class over time</h2>", _detections(run)]
    if s.server:
        parts += ["<h2>Triton</h2>", _key_values(s.server)]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>framestream report</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _overview(s: RunSummary) -> str:
    t = s.totals
    items = {"files": t.files, "ok": t.ok, "error": t.error, "skipped": t.skipped,
             "not processed": t.not_processed, "resumed": t.resumed, "frames": t.frames,
             "wall seconds": t.wall_seconds, "frames/s": t.fps, "stopped": s.stopped,
             "model": s.model_source, "model digest": (s.model_digest or "")[:16],
             "options": ", ".join(f"{k}={v}" for k, v in (s.options or {}).items())}
    items.update(_detection_rows(t))
    return _key_values(items)


def _detection_rows(t: Totals) -> dict[str, object]:
    """The detections in the complete outputs: the total, then per class (most first)."""
    if t.detections is None:
        return {"detections": "not counted (a summary of an older framestream)"}
    unknown = t.detections_unknown
    total = f"{t.detections}" + (f" (unknown for {unknown} resumed file{'s' if unknown != 1 else ''})"
                                 if unknown else "")
    return {"detections": total,
            "detections per class": ", ".join(f"{name} {n}" for name, n in t.detections_by_class.items())}


def _key_values(d: Mapping[str, object]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items())
    return f"<table class=\"kv\">{rows}</table>"


def _file_table(s: RunSummary) -> str:
    """One row per file: its status, whether it was resumed (an earlier run's complete output,
    not redone), its frames, its share of this run's frames, its model input, its detections
    and its error. No per-file rate or seconds: files overlap, so neither is a throughput."""
    head = ("<tr><th>file</th><th>status</th><th>resumed</th><th>frames</th><th>share</th><th>letterbox</th>"
            "<th>detections</th><th>error</th></tr>")
    rows = []
    for f in s.files:
        status, resumed, share, detections = f.status, f.resumed, f.share, f.detections
        rows.append(f"<tr class=\"file {_e(status)}{' resumed' if resumed else ''}\"><td>{_e(f.path)}</td>"
                    f"<td>{_e(status)}</td><td>{'yes' if resumed else ''}</td>"
                    f"<td class=\"n\">{_e(f.frames)}</td>"
                    f"<td class=\"n\">{'' if share is None else f'{100 * float(share):.1f}%'}</td>"
                    f"<td>{_e(f.letterbox)}</td>"
                    f"<td class=\"n\">{'' if detections is None else sum(detections.values())}</td>"
                    f"<td>{_e(f.error)}</td></tr>")
    return f"<table id=\"files\">{head}{''.join(rows)}</table>"


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=96, layout="constrained")


_SVG_HEAD = re.compile(r"^.*?(?=<svg)", re.S)


def _svg(fig, name: str) -> str:
    """The figure as inline SVG: text drawn as paths, no metadata links, ids unique per plot."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    return f"<div class=\"plot\" id=\"{_e(name)}\">{_SVG_HEAD.sub('', buf.getvalue(), count=1)}</div>"


def smoothed(rates: list[float], bucket_s: float, window_s: float) -> list[float]:
    """Frames/s averaged over ``window_s`` (whole buckets, at least one) around each bucket; at
    the run's edges over the part of the window inside the run, so the ends are not pulled
    down by time outside it."""
    k = max(1, round(window_s / bucket_s))
    sums = [0.0]
    for r in rates:
        sums.append(sums[-1] + r)
    out = []
    for i in range(len(rates)):
        lo, hi = max(0, i - k // 2), min(len(rates), i - k // 2 + k)
        out.append((sums[hi] - sums[lo]) / (hi - lo))
    return out


def throughput_window_s(bucket_s: float, span_s: float) -> float:
    """The plot's averaging window: a second, two buckets, or 2% of the run, whichever is longest."""
    return max(_SMOOTH_MIN_S, 2 * bucket_s, _SMOOTH_RUN_FRACTION * span_s)


def _throughput(s: RunSummary) -> str:
    rates = list(s.throughput.frames_per_s) if s.throughput else []
    if not rates or s.throughput is None:
        return "<p class=\"note\">No throughput series in summary.json (a run of an older framestream, shards " \
               "merged by one, or no frame inferred).</p>"
    bucket = s.throughput.bucket_s
    span = (s.schedule.makespan_s if s.schedule else 0.0) or len(rates) * bucket
    frames = sum(rates) * bucket
    mean = frames / span if span > 0 else 0.0
    window = throughput_window_s(bucket, span)
    line = smoothed(rates, bucket, window)
    fig = _figure(9, 2.8)
    ax = fig.add_subplot()
    times = [(i + 0.5) * bucket for i in range(len(rates))]
    ax.plot(times, line, color="#1f77b4", linewidth=1.5, label=f"frames/s, averaged over {window:.3g} s")
    ax.axhline(mean, color="#d62728", linestyle="--", label=f"mean {mean:.1f} frames/s")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("seconds since decoding started" + (" (the first shard's start)" if s.shards else ""))
    ax.set_ylabel("frames/s")
    ax.set_xlim(0, max(span, len(rates) * bucket))
    ax.set_ylim(bottom=0)
    note = (f"<p class=\"note\" id=\"throughput-mean\">Mean: {mean:.1f} frames/s ({frames:.0f} frames in "
            f"{span:.1f} s of decoding and inference); the line averages the frames over {window:.3g} s windows "
            f"(batches arrive in bursts, so a finer line is a comb of spikes).</p>")
    return note + _svg(fig, "throughput")


def _gantt(s: RunSummary) -> str:
    """A bar per timed segment, a row per decoder; a merged run's rows are each shard's decoders,
    on the shards' common time base (seconds since the first shard started)."""
    sched = s.schedule
    bars = _bars(s)
    head = ""
    if s.shards is not None:
        head = _key_values({f"shard {i}": f"{wall} s on {host}" for i, wall, host in s.shards.walls()})
    head += _key_values(sched.headline() if sched else dict.fromkeys(
        ("workers", "segments", "makespan_s", "lower_bound_s", "efficiency", "busy_fraction")))
    if not bars:
        return head + "<p class=\"note\">No segment timing in summary.json (nothing decoded in this run, or " \
                      "an older framestream).</p>"
    lanes = sorted({lane for lane, _, _, _ in bars})
    files = {p: i for i, p in enumerate(sorted({p for _, p, _, _ in bars}))}  # colour index per file
    entries = min(len(files), _MAX_LEGEND_FILES + 1) + 2  # files, "more", makespan, lower bound
    fig = _figure(9, max(1.2 + 0.35 * len(lanes), 0.7 + 0.2 * entries))
    ax = fig.add_subplot()
    cmap = _cmap(len(files))
    labelled: set[str] = set()
    for lane, path, start, seconds in bars:
        named = path not in labelled and files[path] < _MAX_LEGEND_FILES  # each listed file once
        if named:
            labelled.add(path)
        ax.barh(lanes.index(lane), seconds, left=start, height=0.7,
                color=cmap(files[path] % cmap.N), edgecolor="#333", linewidth=0.5,
                label=_short(path) if named else None)
    makespan, lower = (sched.makespan_s, sched.lower_bound_s) if sched else (0.0, 0.0)
    if makespan:
        ax.axvline(makespan, color="#d62728", label=f"makespan {makespan:.2f} s")
    if lower:
        ax.axvline(lower, color="#2ca02c", linestyle="--", label=f"lower bound {lower:.2f} s")
    ax.set_yticks(range(len(lanes)), [_lane_name(lane) for lane in lanes])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since decoding started" + (" in the first shard" if s.shards else "")
                  + " (a bar: one file or segment decoded)")
    if len(files) > _MAX_LEGEND_FILES:  # an entry that names no colour: how many files are not listed
        ax.plot([], [], " ", label=f"... and {len(files) - _MAX_LEGEND_FILES} more files")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="file (colour)", title_fontsize=8)
    return head + _svg(fig, "gantt")


def _bars(s: RunSummary) -> list[tuple[tuple[int, int], str, float, float]]:
    """((shard, decoder), file, start, seconds) per timed segment: a merged run's rows as the merge
    placed them; a single run's (shard -1) from its files' segments."""
    if s.schedule is not None and s.schedule.rows is not None:
        return [((r.shard, r.decoder), r.path, r.start_s, r.seconds) for r in s.schedule.rows]
    if s.shards is not None:  # merged by a version that kept no rows: none to draw
        return []
    return [((-1, decoder), f.path, start, seconds) for f in s.files for decoder, start, seconds in f.timed_segments()]


def _lane_name(lane: tuple[int, int]) -> str:
    shard, decoder = lane
    return f"decoder {decoder}" if shard < 0 else f"shard {shard} decoder {decoder}"


def _short(path: str, limit: int = 40) -> str:
    return path if len(path) <= limit else "..." + path[-(limit - 3):]


def _cmap(n: int):
    from matplotlib import colormaps

    return colormaps["tab20" if n > 10 else "tab10"]


def _detections(run: RunOutputs) -> str:
    videos = [v for v in run.videos if v.output is not None]
    if not videos:
        return "<p class=\"note\">No video has a complete output.</p>"
    parts = []
    for i, v in enumerate(videos[:MAX_VIDEO_PLOTS]):
        parts.append(f"<h3>{_e(v.rel)}</h3>")
        try:
            frames = read_frames(v.output)
        except (OSError, ValueError, KeyError) as e:
            parts.append(f"<p class=\"note\">cannot read {_e(v.output.name)}: {_e(e)}</p>")
            continue
        parts.append(_class_plot(frames, run.names, f"detections-{i}"))
    if len(videos) > MAX_VIDEO_PLOTS:
        parts.append(f"<p class=\"note\">{len(videos) - MAX_VIDEO_PLOTS} more videos not plotted (the first "
                     f"{MAX_VIDEO_PLOTS} are).</p>")
    return "\n".join(parts)


def _class_plot(frames: list, names: dict[int, str], name: str) -> str:
    if not frames:
        return "<p class=\"note\">no frame inferred</p>"
    totals = Counter(c for f in frames for c in f.detections.class_id.tolist())
    if not totals:
        return f"<p class=\"note\">no detections in {len(frames)} frames</p>"
    top = [c for c, _ in totals.most_common(_TOP_CLASSES)]
    keys = top + (["other"] if len(totals) > len(top) else [])
    step = max(1, -(-len(frames) // _MAX_BINS))  # frames per bin
    times, counts = [], {k: [] for k in keys}
    for start in range(0, len(frames), step):
        chunk = frames[start:start + step]
        times.append(chunk[0].t_s)
        per = Counter(c if c in top else "other" for f in chunk for c in f.detections.class_id.tolist())
        for k in keys:
            counts[k].append(per[k] / len(chunk))
    fig = _figure(9, 2.6)
    ax = fig.add_subplot()
    for k in keys:
        label = names.get(k, str(k)) if k != "other" else "other classes"
        ax.plot(times, counts[k], drawstyle="steps-post", label=label, linewidth=1.2)
    ax.set_xlabel("time in the video (s)")
    ax.set_ylabel("detections per frame")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return _svg(fig, name)
