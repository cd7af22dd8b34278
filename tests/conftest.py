"""Shared fixtures: a built contract model, built once per session (it is size-independent), a
real tmpfs, and the processes a test starts (none outlives its test)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import onnxruntime as ort
import pytest

from server_config.model.build import build_model
from server_config.model.files import save_onnx_atomically



def pytest_configure(config: pytest.Config) -> None:
    """SIGHUP at its default for the runs the tests start: a suite started under ``nohup`` (or by
    a runner that ignores SIGHUP) would hand the ignore down to every child, and a run keeps a
    SIGHUP its parent ignored (as ``nohup`` asks), so the terminal-closed tests would see none.
    ``test_signals.py`` starts one run with SIGHUP ignored on purpose. SIGINT the same way: a
    shell ignores it for the commands it starts in the background (``.ci/run &``), Python then
    leaves it ignored, and the Ctrl-C tests would see none; here it is Python's own handler again,
    and every child starts with it at its default."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n in the contract with a 320 model size: small enough for a 2-core CI."""
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    save_onnx_atomically(build_model(size="n", imgsz=320), path)
    return path


@pytest.fixture(scope="session")
def session(model_path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("64k")`` mounts a tmpfs of that size (a disk that really fills up) and returns
    its path; skips with the reason where mounting is not allowed. Unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Processes:
    """The processes one test starts: at its teardown each one still running is killed (SIGKILL
    also ends a stopped one) and every one is waited for, whatever failed first, so no run is
    left behind holding a gate, OUT's lock or a CPU."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []

    def own(self, proc: subprocess.Popen) -> subprocess.Popen:
        """``proc``, to be killed and waited for at teardown."""
        self._procs.append(proc)
        return proc

    def start(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(cmd, **kwargs)``, owned."""
        return self.own(subprocess.Popen(cmd, **kwargs))

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Own each Popen of a test (``processes.own(Popen(...))`` or ``processes.start(cmd, ...)``)."""
    owned = Processes()
    try:
        yield owned
    finally:
        owned.close()
