"""``--devices``: one bulk process per GPU, each on its share of the files.

Which GPUs and which shard each runs is pure and tested here; the fan-out itself (processes,
merged summary, signals passed on, rerun) runs for real on the CPU path, where a "device" is
only the shard a child process takes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.devices import child_argv, combined_exit, device_shard, run_per_device, select_devices
from client.errors import UsageError
from client.shards import Shard

from .test_bulk import entries, read_jsonl
from .test_faults import wait_for
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("text", "visible", "expected"), [
    (None, 8, list(range(8))), ("all", 2, [0, 1]), ("0,2", 4, [0, 2]), (" 3 ", 4, [3]),
])
def test_devices_default_to_every_visible_gpu_or_take_a_list(text, visible, expected) -> None:
    assert select_devices(text, visible) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("2", "shows 2 GPU(s) (ids 0-1), not 2"), ("0,x", "takes 'all' or GPU ids"), ("1,1", "listed twice"),
    ("-1", "takes 'all' or GPU ids"),
])
def test_a_device_list_the_machine_cannot_give_is_a_usage_error_that_says_why(text, message) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_devices(text, 2)


def test_a_malformed_devices_option_is_one_line_and_exit_1_on_any_path(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    done = subprocess.run([sys.executable, "-m", "client.bulk", str(src), "--model", str(model_path),
                           "--devices", "gpu0"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: --devices takes 'all' or GPU ids separated by commas "
                                                "(e.g. 0,2), got 'gpu0'"]


def test_gpus_inside_an_outer_shard_take_disjoint_shards_that_cover_every_node_s_share() -> None:
    nodes, gpus = 3, 4
    taken = [device_shard(Shard(node, nodes), j, gpus) for node in range(nodes) for j in range(gpus)]
    assert sorted(s.index for s in taken) == list(range(nodes * gpus))
    assert {s.count for s in taken} == {nodes * gpus}
    assert device_shard(None, 1, 2) == Shard(1, 2)


def test_a_child_s_device_and_shard_override_the_user_s_and_it_shows_no_live_bar() -> None:
    from client.bulk import parser

    args = parser().parse_args(child_argv(["DIR", "--shard", "0/2", "--devices", "all"], 3, Shard(5, 8)))
    assert (args.devices, args.shard, args.no_progress) == ("3", "5/8", True)


@pytest.mark.parametrize(("codes", "expected"), [
    ([0, 0], 0), ([0, 2], 2), ([2, 1], 1), ([0, 143], 143), ([130, 2], 130), ([0, 137], 137),
])
def test_the_run_s_exit_code_is_the_most_telling_of_its_processes(codes, expected) -> None:
    assert combined_exit(codes) == expected


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("devices")
    write_video(src / "long.mp4", frames=120, size_wh=(160, 96), gop=24)
    for i in range(4):
        write_video(src / f"short{i}.mp4", frames=6, size_wh=(128, 96))
    return src


def test_one_process_per_device_splits_the_files_and_the_last_merges_summary_json(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "out"
    rc = run_per_device([str(src), "--out", str(out), "--model", str(model_path), "--device", "cpu"], [0, 1], None)
    assert rc == 0
    shards = {p.name: json.loads(p.read_text()) for p in out.glob("summary.shard-*.json")}
    assert sorted(shards) == ["summary.shard-0-of-2.json", "summary.shard-1-of-2.json"]
    per_shard = [set(entries(s)) for s in shards.values()]
    assert per_shard[0].isdisjoint(per_shard[1]) and all(per_shard)
    merged = json.loads((out / "summary.json").read_text())
    assert set(entries(merged)) == {"long.mp4", *(f"short{i}.mp4" for i in range(4))}
    assert merged["shards"]["missing"] == [] and len(read_jsonl(out / "long.mp4.jsonl")) == 120


def test_a_signal_to_the_run_reaches_every_device_s_process_once_and_a_rerun_finishes_the_rest(
        src: Path, tmp_path: Path, model_path: Path) -> None:
    out, ready = tmp_path / "out", tmp_path / "ready"
    # Each child is the real bulk CLI, slowed once a video is complete (tests/fault_runner.py);
    # one frame per batch, so each child has work left when its slow-down starts.
    parent = ("import sys; from client.devices import run_per_device; "
              "sys.exit(run_per_device(sys.argv[1:], [0, 1], None, module='tests.fault_runner'))")
    proc = subprocess.Popen([sys.executable, "-c", parent, str(ready), "0.1", "--", str(src), "--out", str(out),
                             "--model", str(model_path), "--device", "cpu", "--no-split", "--batch", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_for(ready, proc)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready.*"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # both children in flight, not one still starting
    assert len(list(tmp_path.glob("ready.*"))) == 2, "a child never started its slowed work"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    stopped = [json.loads(p.read_text()) for p in sorted(out.glob("summary.shard-*.json"))]
    assert len(stopped) == 2 and all(s["stopped"] and "interrupted" in s["stopped"] for s in stopped)

    rc = run_per_device([str(src), "--out", str(out), "--model", str(model_path), "--device", "cpu"], [0, 1], None)
    assert rc == 0
    merged = json.loads((out / "summary.json").read_text())
    assert all(f["status"] == "ok" for f in entries(merged).values()) and len(entries(merged)) == 5
    assert len(read_jsonl(out / "long.mp4.jsonl")) == 120
