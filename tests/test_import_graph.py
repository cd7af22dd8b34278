"""The floor plan, checked: no import cycles in ``client/`` and ``server_config/``, and no library
module importing a command-line module.

A command-line module is one a user runs: a ``__main__.py``, or a module with an
``if __name__ == "__main__":`` block (``client.bulk``, ``client.render``, ``client.cli``,
``client.summary``, ``server_config.local``, ...). Library code that imports one drags the
argument parser, its exit codes and its logging set-up into every program that only wanted the
library, and is how the CLI became the library (issue #25). Imports inside functions count: a
lazy import is still a dependency (``client.ray_worker`` reached ``client.bulk`` that way).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("client", "server_config")

Graph = dict[str, set[str]]


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``packages`` under ``root`` (a package by its name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The known modules an import statement runs: the module named, and each imported name that
    is a submodule (``from . import backends``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if node.level:
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = here[:len(here) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in known]


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Module -> the modules it imports, at any depth of its code (lazy imports included)."""
    known = modules(root, packages)
    graph: Graph = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(t for t in _targets(name, path, node, known) if t != name)
    return graph


def cli_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> set[str]:
    """The modules a user runs: ``__main__`` modules and those with a ``__name__ == "__main__"`` block."""
    found = set()
    for name, path in modules(root, packages).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if path.name == "__main__.py" or any(_is_main_guard(node) for node in tree.body):
            found.add(name)
    return found


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def cycles(graph: Graph, packages: set[str] = frozenset()) -> list[list[str]]:
    """The import cycles (strongly connected sets of more than one module, Tarjan's algorithm),
    leaving out those made of packages alone (an ``__init__`` re-exporting its submodules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 and not set(component) <= packages:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def library_to_cli(graph: Graph, clis: set[str]) -> list[str]:
    """Every "library -> CLI" import, as ``"a -> b"``."""
    return sorted(f"{m} -> {t}" for m, targets in graph.items() if m not in clis for t in targets if t in clis)


def _packages(root: Path = ROOT) -> set[str]:
    return {name for name, path in modules(root).items() if path.name == "__init__.py"}


def test_the_command_line_modules_are_found() -> None:
    clis = cli_modules()
    assert {"client.bulk", "client.render", "client.cli", "server_config.model.__main__"} <= clis, clis
    assert "client.options" not in clis and "client.backends" not in clis


def test_client_and_server_config_have_no_import_cycle() -> None:
    found = cycles(import_graph(), _packages())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_library_module_imports_a_command_line_module() -> None:
    bad = library_to_cli(import_graph(), cli_modules())
    assert bad == [], "library modules import command-line modules: " + "; ".join(bad)


def test_the_checker_sees_a_lazy_cycle_and_a_library_module_importing_the_cli(tmp_path: Path) -> None:
    """The checks above can fail: a package with both faults, one import inside a function."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from .sub import lib\n\nif __name__ == '__main__':\n    lib.run()\n")
    (pkg / "sub" / "lib.py").write_text("from . import helper\n\n\ndef run():\n    from .. import cli\n")
    (pkg / "sub" / "helper.py").write_text("from pkg.sub.lib import run\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert cycles(graph, {"pkg", "pkg.sub"}) == [["pkg.cli", "pkg.sub.helper", "pkg.sub.lib"]]
    assert cli_modules(tmp_path, ("pkg",)) == {"pkg.cli"}
    assert library_to_cli(graph, {"pkg.cli"}) == ["pkg.sub.lib -> pkg.cli"]
