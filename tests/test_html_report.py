"""``OUT/report.html``: written by every run, self-contained, and checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client import bulk
from client.html_report import smoothed, throughput_window_s, write_report
from client.metrics import server_report
from client.throughput import Throughput

from .videos import write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")
_EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|poster)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)"""
                       r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)|@import)""", re.I)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> tuple[Path, dict]:
    """Three videos, one long enough to be split, a non-video; two decoders."""
    root = tmp_path_factory.mktemp("report")
    src = root / "videos"
    src.mkdir()
    write_video(src / "long.mp4", frames=48, gop=8)
    write_video(src / "short.mp4", frames=6)
    write_video(src / "rotated.mp4", frames=8, rotation=270)
    (src / "notes.txt").write_text("not a video\n")
    out = root / "out"
    assert bulk.main([str(src), "--out", str(out), "--model", str(model_path), "--no-progress", "--workers", "2"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def test_every_run_writes_the_report_and_render_report_only_rewrites_it_the_same(run, tmp_path: Path) -> None:
    out, _ = run
    written = (out / "report.html").read_text()
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report.html"))
    done = subprocess.run([sys.executable, "-m", "client.render", str(copy), "--report-only"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (copy / "report.html").read_text() == written.replace(str(out), str(copy))
    assert not [p for p in copy.iterdir() if p.name.startswith(".report")]  # no temporary left


def test_report_only_on_a_folder_without_a_run_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "client.render", str(tmp_path), "--report-only"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no summary.json" in done.stderr and done.stderr.strip().count("\n") == 0
    assert not (tmp_path / "report.html").exists()


def test_the_page_references_nothing_outside_itself(run) -> None:
    out, _ = run
    page = (out / "report.html").read_text()
    assert not _EXTERNAL.search(page), _EXTERNAL.search(page).group(0)
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert _EXTERNAL.search('<img src="https://cdn.example/x.png">')  # the check itself bites
    assert _EXTERNAL.search("<style>@import 'x.css'</style>") and _EXTERNAL.search('<a href="//x">')


def test_the_summary_has_the_segments_per_decoder_and_the_throughput_the_page_plots(run) -> None:
    _, summary = run
    makespan = summary["schedule"]["makespan_s"]
    segments = [s for f in summary["files"] for s in f["segments"]]
    assert len(segments) == summary["schedule"]["segments"] > 3  # long.mp4 was split
    assert {s["decoder"] for s in segments} <= {0, 1}
    for s in segments:
        assert 0 <= s["start_seconds"] <= s["start_seconds"] + s["seconds"] <= makespan + 0.05
    series = summary["throughput"]
    frames = sum(rate * series["bucket_s"] for rate in series["frames_per_s"])
    assert frames == pytest.approx(summary["totals"]["frames"])


def test_throughput_buckets_merge_as_the_run_grows_and_keep_every_frame() -> None:
    t = Throughput(100.0, bucket_s=1.0, max_points=4)
    for now in (100.2, 100.7, 101.5, 103.9):
        t.frame(now)
    assert t.to_json() == {"bucket_s": 1.0, "frames_per_s": [2.0, 1.0, 0.0, 1.0]}
    t.frame(105.0)  # past 4 buckets: pairs merge, width 2 s
    assert t.to_json() == {"bucket_s": 2.0, "frames_per_s": [1.5, 0.5, 0.5]}
    t.frame(140.0)  # far past: merged until it fits
    assert t.bucket_s == 16.0 and sum(t.counts) == 6 and len(t.counts) <= 4
    assert t.to_json(end=160.0)["frames_per_s"][-1] == 0.0  # the run's end, in the last bucket


@needs_chromium
def test_chromium_shows_every_part_of_the_page(run, tmp_path: Path) -> None:
    out, summary = run
    dom = chromium("--dump-dom", (out / "report.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rows = re.findall(r'<tr class="file (\w+)"><td>([^<]*)</td>', html)
    assert sorted(path for _, path in rows) == sorted(f["path"] for f in summary["files"])
    assert ("skipped", "notes.txt") in rows
    plots = dict(re.findall(r'<div class="plot" id="([\w-]+)">(.*?)</div>', html, re.S))
    assert {"throughput", "gantt", "detections-0", "detections-1", "detections-2"} <= set(plots)
    for name, svg in plots.items():
        assert svg.lstrip().startswith("<svg"), name
        drawn = [d for d in re.findall(r'<path[^>]*\sd="([^"]*)"', svg) if d.strip()]
        assert len(drawn) > 10, (name, len(drawn))  # axes, ticks, text as paths, the data
    assert "<table" in html and "Triton" not in html  # no --server: no Triton section
    shot = tmp_path / "shot.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,2600", (out / "report.html").as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    ink = (np.abs(pixels - 255).sum(axis=2) > 60).mean()  # not background
    assert 0.01 < ink < 0.6, ink
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text, lines and coloured plots, not one flat fill


@needs_chromium
def test_a_run_with_a_server_shows_triton_s_figures(run, tmp_path: Path) -> None:
    out, summary = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = dict.fromkeys(["requests", "request_failures", "inferences", "executions", "queue_us",
                            "compute_input_us", "compute_infer_us", "compute_output_us"], 0.0)
    after = dict(before, requests=10, inferences=40, executions=8, queue_us=5000, compute_infer_us=90000)
    (copy / "summary.json").write_text(json.dumps(dict(summary, server=server_report(before, after))))
    write_report(copy)
    html = chromium("--dump-dom", (copy / "report.html").as_uri()).stdout
    section = html[html.index("<h2>Triton</h2>"):]
    assert "<th>avg_batch_size</th><td>5.0</td>" in section and "<th>inferences</th><td>40</td>" in section


def test_a_merged_summary_of_an_older_version_lists_the_shards_and_draws_no_gantt_it_has_no_rows_for(
        run, tmp_path: Path) -> None:
    """Merged before shard schedules were kept (no ``schedule.rows``): each shard's wall is listed
    and no Gantt is drawn from segments timed on different clocks (tests/test_shards.py has the
    merge that keeps them)."""
    out, summary = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    per_shard = [{"index": i, "host": "node", "wall_seconds": 1.5 + i} for i in range(2)]
    merged = {k: v for k, v in summary.items() if k != "schedule"}
    (copy / "summary.json").write_text(json.dumps(dict(merged, shards={"count": 2, "per_shard": per_shard})))
    page = write_report(copy).read_text()
    assert "<th>shard 1</th><td>2.5 s on node</td>" in page and 'id="gantt"' not in page
    assert 'id="throughput"' in page and 'id="detections-0"' in page


def _svg_texts(svg: str) -> list[str]:
    """The texts a plot draws: matplotlib writes each one, drawn as paths, after a comment of its text."""
    return [t.strip() for t in re.findall(r"<!--(.*?)-->", svg, re.S)]


def _plots(html: str) -> dict[str, str]:
    return dict(re.findall(r'<div class="plot" id="([\w-]+)">(.*?)</div>', html, re.S))


@needs_chromium
def test_the_page_gives_no_per_file_rate_or_seconds_and_counts_detections_per_class(run) -> None:
    out, summary = run
    html = chromium("--dump-dom", (out / "report.html").as_uri()).stdout
    heads = re.findall(r"<th>([^<]*)</th>", html[html.index('<table id="files">'):])[:8]
    assert heads == ["file", "status", "resumed", "frames", "share", "letterbox", "detections", "error"]
    assert "<th>fps</th>" not in html and "<th>seconds</th>" not in html
    t = summary["totals"]
    assert t["detections"] > 0 and len(t["detections_by_class"]) > 1
    assert f"<th>detections</th><td>{t['detections']}</td>" in html
    listed = re.search(r"<th>detections per class</th><td>([^<]*)</td>", html)[1]
    assert listed == ", ".join(f"{name} {n}" for name, n in t["detections_by_class"].items())
    for f in summary["files"]:  # each file's detections, summed over its classes
        if f["detections"]:
            assert re.search(rf'<td>{re.escape(f["path"])}</td>.*?<td class="n">{sum(f["detections"].values())}</td>',
                             html)


def test_a_resumed_file_is_marked_in_its_own_column_and_its_error_cell_stays_empty(model_path: Path,
                                                                                tmp_path: Path) -> None:
    src, out = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    write_video(src / "a.mp4", frames=6)
    args = [str(src), "--out", str(out), "--model", str(model_path), "--no-progress"]
    assert bulk.main(args) == 0
    assert bulk.main(args) == 0  # the second run resumes a.mp4
    entry = json.loads((out / "summary.json").read_text())["files"][0]
    assert entry["resumed"] and entry["status"] == "ok" and "fps" not in entry
    page = (out / "report.html").read_text()
    row = re.search(r'<tr class="file ok resumed"><td>a.mp4</td>(.*?)</tr>', page)[1]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[0] == "ok" and cells[1] == "yes" and cells[-1] == ""  # status, resumed, ..., error


@needs_chromium
def test_the_throughput_plot_is_averaged_with_its_mean_drawn_and_stated_and_both_charts_have_legends(run) -> None:
    out, summary = run
    html = chromium("--dump-dom", (out / "report.html").as_uri()).stdout
    plots = _plots(html)
    gantt = _svg_texts(plots["gantt"])
    decoded = {f["path"] for f in summary["files"] if f["segments"]}
    assert decoded and decoded <= set(gantt), gantt  # each file's colour is named
    assert "file (colour)" in gantt and any(t.startswith("makespan ") for t in gantt)
    series = summary["throughput"]
    frames = sum(series["frames_per_s"]) * series["bucket_s"]
    mean = frames / summary["schedule"]["makespan_s"]
    window = throughput_window_s(series["bucket_s"], summary["schedule"]["makespan_s"])
    texts = _svg_texts(plots["throughput"])
    assert f"mean {mean:.1f} frames/s" in texts and f"frames/s, averaged over {window:.3g} s" in texts
    assert 'id="legend_1"' in plots["throughput"]
    stated = re.search(r'<p class="note" id="throughput-mean">Mean: ([\d.]+) frames/s \((\d+) frames', html)
    assert float(stated[1]) == pytest.approx(mean, abs=0.05) and int(stated[2]) == round(frames)


def test_the_averaged_throughput_of_a_comb_of_batches_is_flat_at_their_rate() -> None:
    comb = [120.0, 0.0] * 20  # a batch every other 0.25 s bucket: 60 frames/s
    window = throughput_window_s(0.25, len(comb) * 0.25)
    assert window == 1.0
    line = smoothed(comb, 0.25, window)
    assert len(line) == len(comb)
    assert line[2:-2] == [60.0] * (len(comb) - 4)  # four buckets a window: two whole batches each
    assert all(40.0 <= v <= 80.0 for v in line)  # at the edges, the part of the window inside the run
    assert sum(smoothed([5.0] * 10, 0.25, 1.0)) == pytest.approx(50.0)  # a steady rate stays itself, edges too
    assert throughput_window_s(8.0, 3600.0) == 72.0  # a long run: 2% of it
