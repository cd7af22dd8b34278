"""``python -m server_config.local``: what it needs is checked before anything starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from .triton_server import free_ports, make_repository


def local(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server_config.local", *args], capture_output=True, text=True,
                          timeout=60)


def test_a_missing_model_says_how_to_build_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "yolo" / "1").mkdir(parents=True)
    grpc, http, metrics = free_ports(3)
    result = local("--model-repository", str(repo), "--grpc-port", str(grpc), "--http-port", str(http),
                   "--metrics-port", str(metrics))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "python -m server_config.model build" in result.stderr


def test_a_port_in_use_is_named_with_the_option_to_change_it(tmp_path: Path, model_path: Path) -> None:
    repo = make_repository(tmp_path, model_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        _, http, metrics = free_ports(3)
        result = local("--model-repository", str(repo), "--grpc-port", str(port), "--http-port", str(http),
                       "--metrics-port", str(metrics))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--grpc-port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_served_copy_carries_the_models_parameters_and_leaves_the_repository_as_it_was(
        tmp_path: Path, model_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from client.contract import ModelInfo, model_digest
    from server_config.local import _served_repository

    repo = make_repository(tmp_path / "src", model_path)
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    served = _served_repository(repo, 1, tmp_path / "work")
    config = text_format.Parse((served / "yolo" / "configs" / "cpu.pbtxt").read_text(), model_config_pb2.ModelConfig())
    info = ModelInfo.from_config_parameters({k: v.string_value for k, v in config.parameters.items()},
                                            max_batch=config.max_batch_size)
    assert info.digest == model_digest(model_path) and info.imgsz == (320, 320)
    assert [g.count for g in config.instance_group] == [1]
    served_model = served / "yolo" / "1" / "model.onnx"
    assert not served_model.is_symlink(), "the bytes served are the bytes hashed, whatever happens to the source"
    assert not [k for k, _ in text_format.Parse((served / "other" / "configs" / "cpu.pbtxt").read_text(),
                                                  model_config_pb2.ModelConfig()).parameters.items()]
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


# -- the server's own environment -------------------------------------------------------------

def test_the_server_s_requirements_are_printed_and_no_client_extra_installs_them() -> None:
    import tomllib

    from packaging.requirements import Requirement

    printed = local("--requirements")
    assert printed.returncode == 0
    server = {Requirement(l.split("#")[0]).name for l in printed.stdout.splitlines() if l.split("#")[0].strip()}
    assert {"nvidia-pytriton", "onnxruntime"} <= server
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    client_side = project["dependencies"] + [r for e in project["optional-dependencies"].values() for r in e]
    assert "nvidia-pytriton" not in {Requirement(r).name for r in client_side}, "the client never holds the server"


def prepare(env_dir: Path, *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "server_config.local", "--prepare", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, FRAMESTREAM_TRITON_ENV=str(env_dir)))


def test_a_wheelhouse_without_the_server_s_wheels_is_one_line_saying_how_to_make_one_and_leaves_nothing(
        tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    result = prepare(tmp_path / "env", "--wheelhouse", str(wheels))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if not line.startswith("preparing ")]
    assert error.startswith("error: ")
    assert "pip download" in result.stderr and "--wheelhouse" in result.stderr
    assert not (tmp_path / "env").exists(), "a half-prepared environment would look ready to the next start"


def test_a_missing_wheelhouse_folder_is_one_line(tmp_path: Path) -> None:
    result = prepare(tmp_path / "env", "--wheelhouse", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "nowhere: no such folder" in result.stderr


def test_a_folder_that_is_not_a_venv_is_never_replaced(tmp_path: Path) -> None:
    precious = tmp_path / "env"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    result = prepare(precious)
    assert result.returncode == 1 and "not a venv" in result.stderr
    assert (precious / "notes.txt").read_text() == "mine"


# -- the served config: cpu or gpu ---------------------------------------------------------------

def config_from(*argv: str):
    from server_config.local import LocalServerConfig, parser

    args = parser().parse_args(list(argv))
    return LocalServerConfig(config_name=args.model_config_name, gpu_metrics=args.gpu_metrics,
                             cuda_pool_bytes=tuple(args.cuda_memory_pool_byte_size)
                             if args.cuda_memory_pool_byte_size else None)


def test_the_cpu_config_is_the_default_without_gpu_metrics_or_pools() -> None:
    from server_config.local import config_flags

    assert config_flags(config_from()) == ["--model-config-name=cpu", "--allow-gpu-metrics=false"]


def test_the_gpu_config_turns_on_gpu_metrics_and_a_cuda_pool_large_enough_for_gpu_batches() -> None:
    from server_config.local import GPU_POOL_BYTES, config_flags

    assert config_flags(config_from("--model-config-name", "gpu")) == [
        "--model-config-name=gpu", "--allow-gpu-metrics=true", f"--cuda-memory-pool-byte-size=0:{GPU_POOL_BYTES}"]
    assert GPU_POOL_BYTES >= 32 * 640 * 640 * 3 * 4, "four full batches of 640x640 frames"
    flags = config_from("--model-config-name", "gpu", "--cuda-memory-pool-byte-size", "1:4096",
                        "--cuda-memory-pool-byte-size", "8192", "--no-gpu-metrics")
    assert config_flags(flags) == ["--model-config-name=gpu", "--allow-gpu-metrics=false",
                                   "--cuda-memory-pool-byte-size=1:4096", "--cuda-memory-pool-byte-size=0:8192"]


def test_a_bad_config_name_or_pool_size_is_one_usage_line() -> None:
    for argv in (["--model-config-name", "tpu"], ["--cuda-memory-pool-byte-size", "0:lots"],
                 ["--cuda-memory-pool-byte-size", "-1:10"]):
        result = local(*argv)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ") and "(see python -m server_config.local --help)" in lines[0]


def test_instances_go_into_the_served_config_alone(tmp_path: Path, model_path: Path) -> None:
    import shutil

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from server_config.local import _served_repository
    from server_config.model.paths import MODEL_NAME, MODEL_REPOSITORY

    repo = make_repository(tmp_path / "src", model_path)
    shutil.copy(MODEL_REPOSITORY / MODEL_NAME / "configs" / "gpu.pbtxt", repo / MODEL_NAME / "configs" / "gpu.pbtxt")
    served = _served_repository(repo, 3, tmp_path / "work", "gpu")

    def counts(name: str) -> list[int]:
        text = (served / MODEL_NAME / "configs" / f"{name}.pbtxt").read_text()
        return [g.count for g in text_format.Parse(text, model_config_pb2.ModelConfig()).instance_group]

    assert counts("gpu") == [3] and counts("cpu") == [2]


def test_the_gpu_config_on_a_machine_without_a_gpu_is_refused_in_one_line_naming_why(
        tmp_path: Path, model_path: Path) -> None:
    """Served with --model-config-name gpu, the model never runs on the CPU: here Triton itself
    refuses its KIND_GPU instances (model.py refuses a CPU fallback where a GPU is seen)."""
    import shutil

    import pytest

    from server_config.local import MissingPrerequisiteError, prepared_environment
    from server_config.model.paths import MODEL_NAME, MODEL_REPOSITORY

    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: the gpu config may load there")
    try:
        prepared_environment()
    except MissingPrerequisiteError as e:
        pytest.skip(f"cannot start a local Triton here: {e}")
    repo = make_repository(tmp_path / "src", model_path)
    shutil.rmtree(repo / "other")
    shutil.copy(MODEL_REPOSITORY / MODEL_NAME / "configs" / "gpu.pbtxt", repo / MODEL_NAME / "configs" / "gpu.pbtxt")
    grpc, http, metrics = free_ports(3)
    result = local("--model-repository", str(repo), "--model-config-name", "gpu", "--grpc-port", str(grpc),
                   "--http-port", str(http), "--metrics-port", str(metrics))
    # tritonserver was started and failed to load the model: work failed (client/commandline.py)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert "failed to load 'yolo'" in line and "KIND_GPU" in line
