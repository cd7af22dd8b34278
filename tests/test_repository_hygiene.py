"""What a fresh clone relies on: CI runs README's test command; public surfaces don't drift."""

from __future__ import annotations

import importlib
import re

import pytest

from server_config.model.paths import REPO_ROOT


def readme_test_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("Run the tests") :]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = readme_test_command()
    assert "pytest" in command
    assert command in (REPO_ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "module",
    ["client.contract", "client.errors", "client.letterbox", "client.decode", "client.infer", "client.sinks",
     "client.bulk_run", "client.detections", "client.jobs", "client.collector", "client.triage", "client.outfiles",
     "server_config.model"],
)
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"


def test_tuning_defaults_are_the_ones_in_client_defaults() -> None:
    """One place for each value: the CLI, the pipeline and the backends take client.defaults'."""
    import inspect
    from pathlib import Path

    from client import defaults
    from client.bulk import parser
    from client.infer.embedded import EmbeddedBackend
    from client.infer.embedded_gpu import EmbeddedGpuBackend
    from client.infer.triton import TritonOptions
    from client.pipeline import PipelineConfig

    args = parser().parse_args(["."])
    assert (args.batch, args.retry_seconds) == (defaults.BATCH, defaults.RETRY_S)
    config = PipelineConfig()
    assert (config.batch, config.workers, config.frames_ahead, config.batches_ahead) == (
        defaults.BATCH, defaults.CPU_WORKERS, defaults.FRAMES_AHEAD, defaults.BATCHES_AHEAD)
    options = TritonOptions(url="127.0.0.1:8001")
    assert (options.retry_seconds, options.request_timeout_s) == (defaults.RETRY_S, defaults.REQUEST_TIMEOUT_S)
    assert inspect.signature(EmbeddedBackend).parameters["threads_per_session"].default == defaults.THREADS_PER_SESSION
    assert inspect.signature(EmbeddedGpuBackend).parameters["sessions"].default == defaults.GPU_SESSIONS
    copies = [f"{path}: {m.group(0).strip()}" for path in Path(defaults.__file__).parent.rglob("*.py")
              if path.name != "defaults.py"
              for m in re.finditer(r"^\s*_?(SPLIT_FACTOR|CPU_WORKERS|GPU_WORKERS|POLL_S|ROWS_PER_GROUP)\b.*=.*$",
                                   path.read_text(), re.M)]
    assert copies == []  # no module keeps its own copy of a value
