"""``RunSummary``: the versioned JSON form of summary.json, and the merge's server and series rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.run_summary import VERSION, RunSummary, Series, ServerCounters, read_summary, write_summary
from client.summary import merge_series, merge_server

OLD = {  # a summary.json as framestream wrote it up to b5d07fc: no version, no started_utc
    "files": [{"path": "a.mp4", "status": "ok", "frames": 10, "seconds": 1.0, "error": None, "resumed": False,
               "partial_output": None, "outputs": ["a.mp4.jsonl"], "segments": [
                   {"frames": 10, "seconds": 1.0, "start_seconds": 0.1, "decoder": 0}],
               "letterbox": "640x384", "meta": "a.mp4.meta.json", "detections": {"car": 2}, "frames_kept": 0,
               "share": 1.0}],
    "totals": {"files": 1, "ok": 1, "error": 0, "skipped": 0, "not_processed": 0, "resumed": 0, "continued": 0,
               "frames_kept": 0, "frames": 10, "wall_seconds": 2.0, "fps": 5.0, "detections": 2,
               "detections_by_class": {"car": 2}, "detections_unknown": 0},
    "stopped": None,
    "schedule": {"workers": 1, "segments": 1, "makespan_s": 1.5, "work_s": 0.5, "lower_bound_s": 1.0,
                 "efficiency": 0.667, "busy_fraction": 0.333},
    "model": {"path": None, "source": "built-in", "digest": "abc", "names": {"2": "car"}},
    "inputs": {"root": "/videos", "dirs": 1, "files": 0},
    "options": {"sampling": "every frame", "backend": "embedded"},
    "backend": {"lanes": 1, "busy_fraction": 0.333},
    "throughput": {"bucket_s": 0.25, "frames_per_s": [8.0, 32.0]},
    "a_future_section": {"kept": True},
}


def test_an_unversioned_summary_reads_and_writes_back_as_the_current_version_with_nothing_lost(tmp_path: Path) -> None:
    s = RunSummary.from_json(OLD)
    assert s.version == 1 and s.class_names == {2: "car"} and s.input_root == Path("/videos")
    assert s.files[0].timed_segments() == [(0, 0.1, 1.0)] and s.totals.detections == 2
    path = write_summary(tmp_path, s)
    again = json.loads(path.read_text())
    assert again["version"] == VERSION
    assert {k: v for k, v in again.items() if k != "version"} == OLD  # every section, unknown ones too
    assert read_summary(path) == RunSummary.from_json(again)


def test_a_summary_of_a_newer_version_or_not_a_summary_is_a_value_error_that_says_so() -> None:
    with pytest.raises(ValueError, match="newer framestream"):
        RunSummary.from_json({**OLD, "version": VERSION + 1})
    with pytest.raises(ValueError, match="not a framestream summary"):
        RunSummary.from_json({"files": "x"})


def _counters(url: str, before: float, after: float) -> ServerCounters:
    keys = ("requests", "request_failures", "inferences", "executions", "queue_us", "compute_input_us",
            "compute_infer_us", "compute_output_us")
    return ServerCounters(url, dict.fromkeys(keys, before), dict.fromkeys(keys, after))


def test_server_figures_of_shards_sharing_a_server_are_taken_once_from_first_start_to_last_end() -> None:
    # Two children of --devices 2 --server on one Triton: each window saw both children's traffic
    # (100 -> 160 and 110 -> 200); the run did 100 inferences, not 60 + 90.
    merged = merge_server([_counters("http://t:8002/metrics", 100, 160), _counters("http://t:8002/metrics", 110, 200)])
    assert merged is not None and merged["inferences"] == 100
    two = merge_server([_counters("http://a/metrics", 0, 10), _counters("http://b/metrics", 5, 25)])
    assert two is not None and {u: r["inferences"] for u, r in two["per_server"].items()} == {
        "http://a/metrics": 10, "http://b/metrics": 20}
    assert merge_server([None, None]) is None


def test_series_are_added_on_the_shards_wall_clock() -> None:
    # shard 0 from t=0, 0.25 s buckets; shard 1 started 1 s later with 0.5 s buckets
    merged = merge_series([(0.0, Series(0.25, (4.0, 4.0, 4.0, 4.0))), (1.0, Series(0.5, (10.0, 10.0)))])
    assert merged == Series(0.5, (4.0, 4.0, 10.0, 10.0))
    assert sum(merged.frames_per_s) * merged.bucket_s == 4 * 0.25 * 4 + 2 * 0.5 * 10  # every frame kept
