"""README and docs/ name the tests and results behind their claims: each name must exist, each
link must lead somewhere, so a page cannot cite a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server_config.model.paths import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_TEST_REF = re.compile(r"(?<![\w/])(?:tests/)?(test_\w+\.py)(?:::(\w+))?")
_RESULT_REF = re.compile(r"(?<![\w/])(?:benchmarks/)?results/([\w./-]+\.(?:md|png))")
_README_LINES = 250


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_relative_link_resolves(page: Path) -> None:
    missing = [target for target in _LINK.findall(page.read_text())
               if "://" not in target and not (page.parent / target).exists()]
    assert not missing, f"{_page_id(page)} links to {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_test_a_page_names_exists(page: Path) -> None:
    missing = []
    for file, name in _TEST_REF.findall(page.read_text()):
        path = REPO_ROOT / "tests" / file
        if not path.is_file():
            missing.append(file)
        elif name and not re.search(rf"^\s*(?:async\s+)?def {name}\(", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"{_page_id(page)} names tests that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_benchmark_result_a_page_names_exists(page: Path) -> None:
    missing = [name for name in _RESULT_REF.findall(page.read_text())
               if not (REPO_ROOT / "benchmarks" / "results" / name).exists()]
    assert not missing, f"{_page_id(page)} names results that do not exist: {missing}"


def test_readme_is_a_front_door_and_every_docs_page_is_linked_from_it() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < _README_LINES
    linked = {Path(target).name for target in _LINK.findall(readme) if target.startswith("docs/")}
    assert {page.name for page in PAGES[1:]} <= linked
