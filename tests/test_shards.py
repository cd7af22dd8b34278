"""``--shard I/N``: the balanced partition, shards as separate processes on one OUT, the merge."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.decode import Sampling
from client.discovery import discover
from client.schedule import estimated_work
from client.shards import Shard, owner, partition, resolve_shard, shard_from_env, take

from .videos import write_video

ROOT = Path(__file__).resolve().parent.parent


def every_3_work(c) -> int:
    return estimated_work(c, Sampling(every=3))


def makespan(bins: list[list[str]], works: dict[str, int]) -> int:
    return max(sum(max(1, works[r]) for r in b) for b in bins)


def best_makespan(works: dict[str, int], count: int) -> int:
    """The optimum by trying every assignment (small sets only)."""
    items = list(works.values())
    best = sum(items)
    for assignment in itertools.product(range(count), repeat=len(items)):
        loads = [0] * count
        for work, b in zip(items, assignment):
            loads[b] += work
        best = min(best, max(loads))
    return best


SKEWED = {"long.mp4": 900, **{f"short{i:02d}.mp4": 30 + 7 * (i % 4) for i in range(40)}}


def test_partition_covers_every_file_once_and_is_the_same_in_every_process() -> None:
    works = list(SKEWED.items())
    bins = partition(works, 4)
    flat = [r for b in bins for r in b]
    assert sorted(flat) == sorted(SKEWED) and len(flat) == len(set(flat))
    assert partition(list(reversed(works)), 4) == bins  # input order does not matter
    code = "import json,sys; from client.shards import partition; print(json.dumps(partition(json.loads(sys.argv[1]), 4)))"
    other = subprocess.run([sys.executable, "-c", code, json.dumps(works)], capture_output=True, text=True,
                           cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "7"}, check=True)
    assert json.loads(other.stdout) == bins  # no dependence on hash seeds or set order


def test_one_long_file_among_many_short_gets_a_shard_nearly_to_itself() -> None:
    bins = partition(list(SKEWED.items()), 4)
    long_bin = next(b for b in bins if "long.mp4" in b)
    assert long_bin == ["long.mp4"]  # the rest fill the other three
    assert makespan(bins, SKEWED) == 900  # the lower bound: no split can do better
    others = [sum(SKEWED[r] for r in b) for b in bins if b is not long_bin]
    assert max(others) - min(others) <= max(SKEWED[r] for r in SKEWED if r != "long.mp4")


@pytest.mark.parametrize("count", [2, 3])
def test_partition_is_within_the_lpt_bound_of_the_best_split(count: int) -> None:
    works = {"a": 3, "b": 3, "c": 2, "d": 2, "e": 2, "f": 7, "g": 5, "h": 4, "i": 1}
    bins = partition(list(works.items()), count)
    assert makespan(bins, works) <= (4 / 3 - 1 / (3 * count)) * best_makespan(works, count)


def test_files_of_unknown_length_spread_over_shards_instead_of_piling_on_one() -> None:
    bins = partition([(f"raw{i}.h264", 0) for i in range(6)], 3)
    assert [len(b) for b in bins] == [2, 2, 2]


def test_entries_needing_no_work_have_exactly_one_owner() -> None:
    names = [f"notes{i}.txt" for i in range(30)]
    owners = [owner(n, 3) for n in names]
    assert all(0 <= o < 3 for o in owners) and len(set(owners)) == 3
    assert owners == [owner(n, 3) for n in names]


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"JOB_COMPLETION_INDEX": "2", "FRAMESTREAM_SHARDS": "5"}, Shard(2, 5)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "4"}, Shard(3, 4)),
])
def test_the_orchestrators_environment_names_the_shard(env: dict[str, str], expected: Shard | None) -> None:
    assert shard_from_env(env) == expected


def test_shard_option_overrides_the_environment() -> None:
    assert resolve_shard("1/2", {"JOB_COMPLETION_INDEX": "0", "FRAMESTREAM_SHARDS": "3"}) == Shard(1, 2)


def run_bulk(src: Path, out: Path, model: Path, *extra: str, env: dict[str, str] | None = None,
             wait: bool = True):
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model),
           "--no-progress", "--every", "3", *extra]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION", "FRAMESTREAM_SHARDS"))}
    kwargs = dict(cwd=ROOT, env={**clean, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return subprocess.Popen(cmd, **kwargs)
    return subprocess.run(cmd, timeout=300, **kwargs)


@pytest.mark.parametrize("shard, env", [
    ("3/2", {}), ("a/b", {}), ("0/0", {}), ("1", {}), ("-1/2", {}),
    (None, {"JOB_COMPLETION_INDEX": "1"}),
    (None, {"JOB_COMPLETION_INDEX": "3", "FRAMESTREAM_SHARDS": "3"}),
    (None, {"JOB_COMPLETION_INDEX": "0", "FRAMESTREAM_SHARDS": "2", "SLURM_ARRAY_TASK_ID": "0",
            "SLURM_ARRAY_TASK_COUNT": "2"}),
    (None, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_MAX": "8"}),
    (None, {"FRAMESTREAM_SHARDS": "3"}),
])
def test_a_malformed_or_contradictory_shard_is_one_line_and_exit_1(tmp_path: Path, model_path: Path, shard, env) -> None:
    done = run_bulk(tmp_path, tmp_path / "out", model_path, *(["--shard", shard] if shard else []), env=env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "error:" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.fixture
def skewed(tmp_path: Path) -> Path:
    """One long video among short ones (the seed's shape), a non-video and a damaged video."""
    src = tmp_path / "videos"
    (src / "cam").mkdir(parents=True)
    write_video(src / "long.mp4", frames=60)
    for i in range(5):
        write_video(src / "cam" / f"short{i}.mp4", frames=6 + i)
    (src / "notes.txt").write_text("not a video\n")
    (src / "broken.mp4").write_bytes(b"\x00" * 64)
    return src


def exit_code(index: int, count: int) -> int:
    """2 for the shard that reports the damaged video (an error entry), 0 for the others."""
    return 2 if owner("broken.mp4", count) == index else 0


def summary(out: Path, name: str = "summary.json") -> dict:
    return json.loads((out / name).read_text())


def outputs(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix()[: -len(".jsonl")] for p in out.rglob("*.jsonl")}


def test_three_shards_at_once_on_one_out_do_every_video_once_and_merge_one_summary(
        skewed: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    procs = [run_bulk(skewed, out, model_path, "--shard", f"{i}/3", "--workers", "1", wait=False) for i in range(3)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [exit_code(i, 3) for i in range(3)], [err for _, err, _ in results]
    videos = {"long.mp4", *(f"cam/short{i}.mp4" for i in range(5))}
    assert outputs(out) == videos
    shard_files = [{f["path"]: f for f in summary(out, f"summary.shard-{i}-of-3.json")["files"]} for i in range(3)]
    done_by = [{p for p, f in files.items() if f["frames"] > 0} for files in shard_files]
    assert set().union(*done_by) == videos and sum(map(len, done_by)) == len(videos)  # each video by one shard
    merged = summary(out)
    paths = [f["path"] for f in merged["files"]]
    assert sorted(paths) == paths and set(paths) == videos | {"notes.txt", "broken.mp4"} and len(paths) == 8
    assert merged["shards"]["merged"] == [0, 1, 2] and merged["shards"]["missing"] == []
    assert "overlap" not in merged
    per = merged["shards"]["per_shard"]
    t = merged["totals"]
    assert t["files"] == 8 and t["ok"] == 6 and t["skipped"] == 1 and t["error"] == 1
    assert t["frames"] == sum(p["frames"] for p in per) == sum(f["frames"] for f in merged["files"]) > 0
    assert t["wall_seconds"] == max(p["wall_seconds"] for p in per)
    assert [p["files"] for p in per] == [len(files) for files in shard_files]
    long_shard = next(i for i, d in enumerate(done_by) if "long.mp4" in d)
    assert done_by[long_shard] == {"long.mp4"}  # the long file's shard takes nothing else
    again = subprocess.run([sys.executable, "-m", "client.summary", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and summary(out)["files"] == merged["files"], again.stderr  # the damaged video


def test_merging_while_a_shard_is_missing_names_it_and_exits_2(skewed: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    assert run_bulk(skewed, out, model_path, "--shard", "1/2").returncode == exit_code(1, 2)
    assert not (out / "summary.json").exists()  # the last shard merges; shard 0 has not run
    done = subprocess.run([sys.executable, "-m", "client.cli", "summary", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "missing shards: 0" in done.stdout, done.stdout + done.stderr
    assert summary(out)["shards"]["missing"] == [0]
    assert run_bulk(skewed, out, model_path, "--shard", "0/2").returncode == exit_code(0, 2)
    merged = summary(out)
    assert merged["shards"]["missing"] == [] and merged["totals"]["files"] == 8


def test_environment_shards_split_the_directory_like_the_option(skewed: Path, tmp_path: Path, model_path: Path) -> None:
    k8s, slurm = tmp_path / "k8s", tmp_path / "slurm"
    for i in range(2):
        assert run_bulk(skewed, k8s, model_path, env={"JOB_COMPLETION_INDEX": str(i),
                                                     "FRAMESTREAM_SHARDS": "2"}).returncode == exit_code(i, 2)
        assert run_bulk(skewed, slurm, model_path, env={"SLURM_ARRAY_TASK_ID": str(i + 1),
                        "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}).returncode == exit_code(i, 2)
    expected = take(discover(skewed), Shard(0, 2), every_3_work)
    for out in (k8s, slurm):
        first = {f["path"] for f in summary(out, "summary.shard-0-of-2.json")["files"] if f["status"] == "ok"}
        assert first == {c.rel for c in expected.videos}
        assert summary(out)["totals"]["files"] == 8


def test_a_killed_shard_rerun_completes_only_its_own_unfinished_files(tmp_path: Path, model_path: Path) -> None:
    src, out = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    for i in range(9):
        write_video(src / f"clip{i}.mp4", frames=30)
    slow = ("--every", "1", "--workers", "1", "--batch", "1")  # a video at a time: the kill lands between them
    mine = {c.rel for c in take(discover(src), Shard(1, 3), lambda c: estimated_work(c, Sampling())).videos}
    assert len(mine) == 3
    proc = run_bulk(src, out, model_path, "--shard", "1/3", *slow, wait=False)
    records = out / ".framestream" / "done"
    while proc.poll() is None and not any(records.rglob("*.json")):  # the first video is complete
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    finished = {p.relative_to(records).as_posix()[: -len(".json")] for p in records.rglob("*.json")}
    assert finished and finished < mine
    rerun = run_bulk(src, out, model_path, "--shard", "1/3", *slow)
    assert rerun.returncode == 0, rerun.stderr
    files = {f["path"]: f for f in summary(out, "summary.shard-1-of-3.json")["files"]}
    assert set(files) == mine and all(f["status"] == "ok" for f in files.values())
    assert {p for p, f in files.items() if f["resumed"]} == finished  # only the unfinished ones redone
    assert outputs(out) == mine  # nothing of the other shards' files


def test_shards_writing_one_parquet_dataset_at_once_leave_every_video_in_it(skewed: Path, tmp_path: Path,
                                                                           model_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="needs the parquet extra")
    out = tmp_path / "out"
    procs = [run_bulk(skewed, out, model_path, "--shard", f"{i}/2", "--format", "parquet", wait=False) for i in range(2)]
    for p in procs:
        p.communicate(timeout=300)
    assert [p.returncode for p in procs] == [exit_code(i, 2) for i in range(2)]
    rows = pq.read_table(out / "detections").to_pylist()
    merged = summary(out)
    inferred = {f["path"]: f["frames"] for f in merged["files"] if f["status"] == "ok"}
    assert len(inferred) == 6
    for path, frames in inferred.items():  # every frame row of every video, from whichever shard did it
        assert len({r["frame"] for r in rows if r["video"] == path}) <= frames
        assert any(r["video"] == path for r in rows)


def test_more_shards_than_files_leaves_some_empty_and_still_merges(skewed: Path, tmp_path: Path,
                                                                    model_path: Path) -> None:
    out = tmp_path / "out"
    codes = [run_bulk(skewed, out, model_path, "--shard", f"{i}/10").returncode for i in range(10)]
    assert codes == [exit_code(i, 10) for i in range(10)]
    per = summary(out)["shards"]["per_shard"]
    assert [p["index"] for p in per] == list(range(10)) and sum(p["files"] for p in per) == 8
    assert any(p["files"] == 0 for p in per)


def test_summary_without_shard_summaries_or_with_two_runs_of_them_is_one_line_and_exit_1(tmp_path: Path) -> None:
    def merge_cli() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "client.summary", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True)

    empty = merge_cli()
    assert empty.returncode == 1 and empty.stderr.count("\n") == 1 and "--shard" in empty.stderr
    one = {"files": [], "totals": {k: 0 for k in ("files", "ok", "error", "skipped", "not_processed", "resumed",
                                                   "frames", "wall_seconds", "fps")}}
    for name in ("summary.shard-0-of-2.json", "summary.shard-0-of-3.json"):
        (tmp_path / name).write_text(json.dumps(one))
    mixed = merge_cli()
    assert mixed.returncode == 1 and mixed.stderr.count("\n") == 1 and "N=2, N=3" in mixed.stderr


def test_two_shards_merge_keeps_schedule_throughput_and_backend_and_the_page_draws_them(
        tmp_path: Path, model_path: Path) -> None:
    """Two real shard processes on one OUT: the merged summary keeps every section a single run
    has (the segments of both shards as labelled rows on one time base, the throughput series,
    the backend), and report.html, rendered by Chromium, shows the Gantt and the throughput plot."""
    src, out = tmp_path / "videos", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        write_video(src / f"clip{i}.mp4", frames=12)
    procs = [run_bulk(src, out, model_path, "--shard", f"{i}/2", "--workers", "1", wait=False) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    shards = [summary(out, f"summary.shard-{i}-of-2.json") for i in range(2)]
    merged = summary(out)
    assert merged["version"] == 2 and merged["started_utc"] == min(s["started_utc"] for s in shards)
    sched = merged["schedule"]
    assert sched["segments"] == sum(s["schedule"]["segments"] for s in shards) > 0
    assert sched["busy_s"] == pytest.approx(sum(s["schedule"]["busy_s"] for s in shards), abs=0.002)
    rows = sched["rows"]
    assert {r["shard"] for r in rows} == {0, 1}
    for i, s in enumerate(shards):  # each shard's segments, moved by its start after the first shard's
        offset = s["started_utc"] - merged["started_utc"]
        mine = sorted((r["path"], r["start_s"]) for r in rows if r["shard"] == i)
        theirs = sorted((f["path"], round(offset + seg["start_seconds"], 3))
                        for f in s["files"] for seg in f["segments"])
        assert [p for p, _ in mine] == [p for p, _ in theirs]
        assert all(abs(a - b) <= 0.002 for (_, a), (_, b) in zip(mine, theirs))
    series = merged["throughput"]
    bucket = series["bucket_s"]
    assert sum(series["frames_per_s"]) * bucket == pytest.approx(merged["totals"]["frames"], abs=0.1)
    assert merged["backend"]["lanes"] == sum(s["backend"]["lanes"] for s in shards)
    assert merged["options"]["backend"] == "embedded" and "differs" not in merged["backend"]
    from .test_html_report import CHROMIUM, chromium

    if CHROMIUM is None:
        pytest.skip("no chromium to render the page")
    html = chromium("--dump-dom", (out / "report.html").as_uri()).stdout
    assert 'id="gantt"' in html and 'id="throughput"' in html, html[:2000]
    assert "No throughput series" not in html and "<th>shard 1</th>" in html
