"""A run says how many detections it made, per class, after the filters: on its last line, in
``summary.json``'s totals and each file's entry, in each sidecar (so a resumed file keeps its
count), and summed class by class when shards' summaries are merged. A run on the built-in
untrained model says so at its start and at its end, with the command that gets a real one.

The real bulk CLI runs in a subprocess with the square detector (tests/square_detector.py):
boxes that follow the red and green squares the test drew, so the counts are known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client.summary import merge

from .square_detector import squares_frame
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "UNTRAINED weights"
FETCH = "python -m server_config.model fetch yolov8n"

# Square tracks (x, y, side) per class; None: not in that frame. Class 0 red, 1 green; the built
# model names them "person" and "bicycle" (COCO's first two classes).
A = {0: [(10 + 4 * i, 20, 20) for i in range(10)], 1: [(100, 50, 20)] * 3 + [None] * 7}
B = {1: [(30, 30, 24)] * 5}
EXPECTED = {"person": 10, "bicycle": 8}  # a.mp4: 10 red and 3 green frames; b.mp4: 5 green


def run_squares(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.square_detector", "--", *args, "--no-progress",
                           "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("squares")
    write_video(src / "a.mp4", frames=10, size_wh=(192, 96), image=lambda i, w, h: squares_frame(A, i, w, h))
    write_video(src / "b.mp4", frames=5, size_wh=(160, 96), image=lambda i, w, h: squares_frame(B, i, w, h))
    return src


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def counts_said(done: subprocess.CompletedProcess) -> str:
    """The last line's count (the square detector runs inside the built model's backend, so the
    untrained notice follows it there)."""
    return last_line(done).split("; warning: ")[0]


def counted_in_outputs(out: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for jsonl in sorted(out.glob("*.jsonl")):
        for line in jsonl.read_text().splitlines():
            for det in json.loads(line)["detections"]:
                counts[int(det[5])] = counts.get(int(det[5]), 0) + 1
    return counts


def test_the_last_line_summary_and_sidecars_count_detections_per_class(squares: Path, tmp_path: Path,
                                                                        model_path: Path) -> None:
    out = tmp_path / "out"
    done = run_squares(str(squares), "--out", str(out), "--model", str(model_path))
    assert done.returncode == 0, done.stderr
    assert counted_in_outputs(out) == {0: 10, 1: 8}  # what the outputs hold: the counts must say the same
    t = summary_of(out)["totals"]
    assert (t["detections"], t["detections_by_class"], t["detections_unknown"]) == (18, EXPECTED, 0)
    files = {f["path"]: f for f in summary_of(out)["files"]}
    assert files["a.mp4"]["detections"] == {"person": 10, "bicycle": 3}
    assert files["b.mp4"]["detections"] == {"bicycle": 5}
    meta = json.loads((out / "a.mp4.meta.json").read_text())
    assert (meta["detections"], meta["detections_by_class"]) == (13, {"person": 10, "bicycle": 3})
    assert counts_said(done) == "detections: 18 in the complete outputs (person 10, bicycle 8)"


def test_the_counts_are_taken_after_the_classes_and_conf_filters(squares: Path, tmp_path: Path,
                                                                 model_path: Path) -> None:
    out = tmp_path / "out"
    done = run_squares(str(squares), "--out", str(out), "--model", str(model_path), "--classes", "bicycle")
    assert done.returncode == 0, done.stderr
    assert counted_in_outputs(out) == {1: 8}
    t = summary_of(out)["totals"]
    assert (t["detections"], t["detections_by_class"]) == (8, {"bicycle": 8})
    assert counts_said(done) == "detections: 8 in the complete outputs (bicycle 8)"
    out2 = tmp_path / "out2"
    done = run_squares(str(squares), "--out", str(out2), "--model", str(model_path), "--conf", "0.95")
    assert done.returncode == 0, done.stderr  # the squares score 0.9: none kept
    assert summary_of(out2)["totals"]["detections"] == 0
    assert counts_said(done) == "detections: 0 in the complete outputs"


def test_a_resumed_file_keeps_its_count_and_an_older_output_s_is_unknown_not_zero(squares: Path, tmp_path: Path,
                                                                                  model_path: Path) -> None:
    out = tmp_path / "out"
    assert run_squares(str(squares), "--out", str(out), "--model", str(model_path)).returncode == 0
    done = run_squares(str(squares), "--out", str(out), "--model", str(model_path))
    assert done.returncode == 0, done.stderr
    t = summary_of(out)["totals"]
    assert (t["resumed"], t["detections"], t["detections_by_class"], t["detections_unknown"]) == (2, 18, EXPECTED, 0)
    assert counts_said(done) == "detections: 18 in the complete outputs (person 10, bicycle 8)"
    # b.mp4's sidecar as an older version wrote it: no count. Its output is still resumed.
    meta = out / "b.mp4.meta.json"
    doc = json.loads(meta.read_text())
    for key in ("detections", "detections_by_class"):
        del doc[key]
    meta.write_text(json.dumps(doc))
    done = run_squares(str(squares), "--out", str(out), "--model", str(model_path))
    assert done.returncode == 0, done.stderr
    summary = summary_of(out)
    t = summary["totals"]
    assert (t["resumed"], t["detections"], t["detections_by_class"], t["detections_unknown"]) == (
        2, 13, {"person": 10, "bicycle": 3}, 1)
    assert {f["path"]: f["detections"] for f in summary["files"]}["b.mp4"] is None
    assert counts_said(done) == ("detections: 13 in the complete outputs (person 10, bicycle 3); "
                               "unknown for 1 resumed file (an older version's sidecar, without a count)")


def test_shards_counts_add_up_class_by_class_in_the_merged_summary(squares: Path, tmp_path: Path,
                                                                   model_path: Path) -> None:
    out = tmp_path / "out"
    for i in range(2):
        done = run_squares(str(squares), "--out", str(out), "--model", str(model_path), "--shard", f"{i}/2")
        assert done.returncode == 0, done.stderr
    shards = [json.loads((out / f"summary.shard-{i}-of-2.json").read_text())["totals"] for i in range(2)]
    assert all(s["detections"] > 0 for s in shards)  # each shard did one of the videos
    t = summary_of(out)["totals"]
    assert (t["detections"], t["detections_by_class"], t["detections_unknown"]) == (18, EXPECTED, 0)


def test_a_merge_with_a_shard_summary_that_counted_nothing_says_unknown() -> None:
    """A shard summary written by a version without counts: its ok files' counts are unknown."""
    def shard(index: int, **totals) -> dict:
        base = {"files": 1, "ok": 1, "error": 0, "skipped": 0, "not_processed": 0, "resumed": 0, "frames": 5,
                "wall_seconds": 1.0, "fps": 5.0}
        return {"files": [{"path": f"v{index}.mp4", "frames": 5, "share": 1.0}], "totals": {**base, **totals}}

    merged = merge({0: shard(0, detections=5, detections_by_class={"car": 3, "person": 2}, detections_unknown=0),
                    1: shard(1, detections=4, detections_by_class={"person": 4}, detections_unknown=0),
                    2: shard(2)}, 3)
    t = merged["totals"]
    assert (t["detections"], t["detections_by_class"], t["detections_unknown"]) == (9, {"person": 6, "car": 3}, 1)


def test_a_run_on_the_untrained_built_in_model_says_so_at_its_start_and_its_end(squares: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-m", "client.bulk", str(squares / "b.mp4"), "--out", str(tmp_path / "out"),
                           "--no-progress", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "FRAMESTREAM_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    said = [i for i, line in enumerate(lines) if NOTICE in line and FETCH in line and "mean nothing" in line]
    table = next(i for i, line in enumerate(lines) if line.startswith("file "))
    assert len(said) == 2 and said[0] < table and said[1] == len(lines) - 1, done.stderr
    assert lines[-1].startswith("detections: ")


def test_a_run_on_a_model_that_is_not_the_built_in_one_does_not_warn(squares: Path, tmp_path: Path,
                                                                     model_path: Path) -> None:
    """The notice follows the mark ``build`` writes, not the file's name or place: a wrapped
    export at the default place gets none."""
    from server_config.model.contract_graph import HeadLayout

    from .synthetic_exports import make_export

    export = tmp_path / "export.onnx"
    export.write_bytes(make_export(HeadLayout.ULTRALYTICS, names={0: "cat", 1: "dog", 2: "bird"}).SerializeToString())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FRAMESTREAM_HOME": str(tmp_path / "home")}
    wrapped = subprocess.run([sys.executable, "-m", "server_config.model", "wrap", str(export)], capture_output=True,
                             text=True, cwd=ROOT, timeout=300, env=env)
    assert wrapped.returncode == 0, wrapped.stderr
    done = subprocess.run([sys.executable, "-m", "client.bulk", str(squares / "b.mp4"), "--out", str(tmp_path / "out"),
                           "--no-progress", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert NOTICE not in done.stderr and "fetched" not in done.stderr
    assert last_line(done).startswith("detections: ")
