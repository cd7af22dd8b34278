"""Shards on one Triton: the merged summary takes the server's figures once for the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_triton import clips, server_args, triton  # noqa: F401 - the fixtures this test uses

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parent.parent


def test_two_shards_on_one_server_merge_the_server_s_figures_once_not_per_shard(
        triton, clips, tmp_path: Path, model_path: Path) -> None:  # noqa: F811
    """Two shard processes at once on one server (as ``--devices 2 --server`` runs its children):
    each shard's own window of the server's counters holds its sibling's traffic too, so the merge
    takes one window, from the first shard's start to the last one's end: the run's inferences
    are its frames, once."""
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "client.bulk", str(clips), "--out", str(out), "--model",
                               str(model_path), "--no-progress", "--shard", f"{i}/2", *server_args(triton)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMP"))})
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    merged = json.loads((out / "summary.json").read_text())
    shards = [json.loads((out / f"summary.shard-{i}-of-2.json").read_text()) for i in range(2)]
    assert all(s["server_counters"]["url"] == triton.config.metrics_url for s in shards)
    server = merged["server"]
    assert server["inferences"] == merged["totals"]["frames"] == 41 and server["request_failures"] == 0
    assert merged["backend"]["transport"] == "system_shm" and "differs" not in merged["backend"]
