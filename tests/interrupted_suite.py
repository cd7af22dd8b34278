"""A small suite that ``test_signals.py`` runs under ``python -m pytest`` and stops with Ctrl-C
(not collected by a plain ``pytest``: the name does not start with ``test_``).

Its first test runs the bulk CLI inside the pytest process (``bulk.main([...])``, as many tests
do), held at one frame's write (:func:`tests.signal_runner.arm`), with a second run of the CLI
in a child process of its own session held before its summary. The test starts the suite, waits
for both holds, and sends SIGINT to the suite's process group as a terminal's Ctrl-C does: the
suite must stop there (its next test never runs) and leave no process behind. The go-ahead files
are never created: only the signal ends the holds.

``SUITE_DIR`` (environment): where the holds' files and the marker of the next test go;
``SUITE_MODEL``: the model the runs use (the calling test's, so this suite builds none).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import bulk

from .conftest import Processes
from .signal_runner import arm
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]
WRITE_READY, CHILD_READY, NEXT_RAN = "write.ready", "child.ready", "next-test-ran"


@pytest.fixture
def place() -> tuple[Path, Path]:
    if "SUITE_DIR" not in os.environ or "SUITE_MODEL" not in os.environ:
        pytest.skip("run by tests/test_signals.py, which sets SUITE_DIR and SUITE_MODEL")
    return Path(os.environ["SUITE_DIR"]), Path(os.environ["SUITE_MODEL"])


def test_the_cli_run_in_this_process_while_a_child_run_holds(place: tuple[Path, Path], tmp_path: Path,
                                                            processes: Processes) -> None:
    where, model = place
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=12)
    child = [sys.executable, "-m", "tests.signal_runner", "summary", str(where / CHILD_READY), str(where / "never"),
             "--", str(src), "--out", str(tmp_path / "child-out"), "--model", str(model), "--no-progress"]
    processes.start(child, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arm("write", where / WRITE_READY, f"a.mp4:3:{where / 'never'}")
    rc = bulk.main([str(src), "--out", str(tmp_path / "out"), "--model", str(model), "--no-progress"])
    assert rc == 0  # not reached where Ctrl-C stops the suite


def test_the_next_test(place: tuple[Path, Path]) -> None:
    (place[0] / NEXT_RAN).touch()
