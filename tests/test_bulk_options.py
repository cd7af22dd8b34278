"""``BulkOptions`` (client/options.py) and the set-up it feeds (client/backends.py): one frozen,
checked value from the command line, the same one the run, the backend set-up and every Ray node
read (it is pickled to them), and the defaults that depend on the machine chosen in one place."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from client import backends, defaults
from client.bulk import _options, parser
from client.errors import UsageError
from client.inputs import Inputs
from client.options import BulkOptions
from client.shards import Shard


def options_of(*argv: str, environ: dict[str, str] | None = None) -> BulkOptions:
    return _options(parser().parse_args(list(argv)), environ or {})


def test_the_command_line_becomes_one_frozen_value_that_pickles_whole(tmp_path: Path) -> None:
    opts = options_of(str(tmp_path), "--out", str(tmp_path / "o"), "--fps", "2.5", "--workers", "3",
                      "--no-split", "--no-progress", "--batch", "4", "--conf", "0.5")
    assert opts.inputs == Inputs(root=tmp_path, dirs=(tmp_path,))
    assert opts.sampling.describe() == "fps=2.5" and (opts.batch, opts.workers, opts.conf) == (4, 3, 0.5)
    assert opts.split is False and opts.progress is False and opts.shard is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.batch = 8  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(opts))  # what a Ray node receives
    assert again == opts and again.sampling == opts.sampling


def test_a_shard_comes_from_the_flag_or_the_environment_but_never_under_ray(tmp_path: Path) -> None:
    assert options_of(str(tmp_path), "--shard", "1/3").shard == Shard(1, 3)
    slurm = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert options_of(str(tmp_path), environ=slurm).shard == Shard(2, 4)
    assert options_of(str(tmp_path), "--ray", "auto", environ=slurm).shard is None
    with pytest.raises(UsageError, match="--ray and --shard"):
        options_of(str(tmp_path), "--ray", "auto", "--shard", "0/2")


@pytest.mark.parametrize(("change", "message"), [
    ({"batch": 0}, "--batch"),
    ({"every": 0}, "--every"),
    ({"fps": float("nan")}, "--fps"),
    ({"every": 2, "fps": 3.0}, "choose one of every, fps and keyframes"),
    ({"conf": 1.0}, r"--conf must be in \[0, 1\)"),
    ({"server": "no-port"}, "--server takes HOST:PORT"),
    ({"devices": "zero"}, "--devices"),
    ({"ray": "auto", "devices": "0"}, "--devices is for one machine"),
    ({"ray": "auto", "shard": Shard(0, 2)}, "--ray and --shard"),
])
def test_a_program_building_options_itself_gets_the_command_lines_checks(
        tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        BulkOptions(inputs=Inputs(root=tmp_path, dirs=(tmp_path,)), out=tmp_path / "o", **change)


def test_the_decoder_count_default_is_chosen_in_one_place(tmp_path: Path) -> None:
    base = BulkOptions(inputs=Inputs(root=tmp_path, dirs=(tmp_path,)), out=tmp_path / "o")
    assert backends.worker_count(base, gpu=False) == defaults.CPU_WORKERS
    assert backends.worker_count(base, gpu=True, device=None) == defaults.GPU_WORKERS  # a Ray driver: GPUs elsewhere
    assert backends.worker_count(dataclasses.replace(base, workers=5), gpu=True) == 5


def test_every_machine_builds_the_same_pipeline_configuration_gpu_device_included(tmp_path: Path) -> None:
    opts = options_of(str(tmp_path), "--keyframes", "--square", "--batch", "2")
    config = backends.pipeline_config(opts, gpu=True, workers=3, device=1, budget=None)
    assert (config.batch, config.workers, config.square, config.sampling.keyframes, config.gpu, config.gpu_device,
            config.decode_threads) == (2, 3, True, True, True, 1, 0)
