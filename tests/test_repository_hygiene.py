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
     "client.run", "server_config.model"],
)
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"
