"""One exit-code convention for every command (client/commandline.py): 1 when the command line,
a path or a model cannot be used as given; 2 when the work was attempted and failed; 128 + N on
signal N. Each case runs the real command in a subprocess, as ``python -m ...`` and as
``framestream ...``.

Work failed (2) is pinned elsewhere too: videos that fail (tests/test_first_hour_errors.py),
render's moved sources (tests/test_render.py), a quantisation that cannot hold --min-f1
(tests/test_quantize.py), shards missing from a merge (tests/test_options_and_names.py).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/framestream-test"

# (the command as python -m names it, its arguments): every one a mistake on the command line
USAGE_MISTAKES = [
    ("client.bulk", ["--no-such-option", "."]),
    ("client.bulk", ["--workers", "abc", "."]),
    ("client.render", []),
    ("client.render", [MISSING]),
    ("client.summary", []),
    ("client.summary", [MISSING]),
    ("server_config.model", []),
    ("server_config.model", ["frobnicate"]),
    ("server_config.model", ["build", "--imgsz", "abc"]),
    ("server_config.model", ["build", "--imgsz", "100", "--out", "{tmp}/m.onnx"]),
    ("server_config.model", ["wrap", f"{MISSING}.onnx", "--out", "{tmp}/m.onnx"]),
    ("server_config.model", ["quantize", f"{MISSING}.onnx"]),
    ("server_config.model", ["fetch", "nope", "--out", "{tmp}/m.onnx"]),
    ("server_config.model", ["stamp", MISSING]),
    ("server_config.local", ["--grpc-port", "abc"]),
    ("server_config.local", ["--model-config-name", "tpu"]),
    ("server_config.local", ["--http-port", "70000"]),
]
SUBCOMMAND = {"client.bulk": "bulk", "client.render": "render", "client.summary": "summary",
              "server_config.model": "model", "server_config.local": "serve"}


def run(argv: list[str], tmp_path: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FRAMESTREAM_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, **kwargs)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("via", ["python -m", "framestream"])
@pytest.mark.parametrize(("module", "args"), USAGE_MISTAKES,
                         ids=[f"{m.rsplit('.', 1)[-1]}-{'-'.join(a)[:40] or 'nothing'}" for m, a in USAGE_MISTAKES])
def test_every_command_exits_1_with_one_error_line_on_a_usage_mistake(
        tmp_path: Path, via: str, module: str, args: list[str]) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    argv = ["-m", module, *args] if via == "python -m" else ["-m", "client.cli", SUBCOMMAND[module], *args]
    done = run(argv, tmp_path)
    assert done.returncode == 1, done.stderr
    one_error_line(done)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv", [["nope"], []], ids=["unknown-command", "no-command"])
def test_framestream_itself_exits_1_on_a_usage_mistake(tmp_path: Path, argv: list[str]) -> None:
    done = run(["-m", "client.cli", *argv], tmp_path)
    assert done.returncode == 1, done.stderr
    if argv:
        assert "unknown command 'nope'" in one_error_line(done)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` for any path; with ``stall`` set, sends the headers and a first chunk, then
    waits for ``release`` (a download in progress, for a signal to arrive during)."""

    body = b""
    stall = False
    started = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) * (4 if self.stall else 1)))
        self.end_headers()
        self.wfile.write(self.body)
        self.wfile.flush()
        if self.stall:
            type(self).started.set()
            type(self).release.wait(60)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"body": b"x" * 4096, "started": threading.Event(),
                                            "release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/model.onnx", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("via", [["-m", "server_config.model"], ["-m", "client.cli", "model"]],
                         ids=["python -m", "framestream"])
def test_a_download_whose_checksum_differs_is_work_failed_exit_2(
        tmp_path: Path, http_server: tuple[str, type[_Handler]], via: list[str]) -> None:
    url, handler = http_server
    wrong = hashlib.sha256(handler.body + b"!").hexdigest()
    out = tmp_path / "out" / "m.onnx"
    done = run([*via, "fetch", "--url", url, "--sha256", wrong, "--out", str(out)], tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "is not the expected" in lines[0], done.stderr
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_during_a_model_download_exits_128_plus_its_number_and_leaves_nothing(
        tmp_path: Path, http_server: tuple[str, type[_Handler]], signum: signal.Signals, code: int) -> None:
    url, handler = http_server
    handler.stall = True
    out = tmp_path / "out" / "m.onnx"
    env = {**os.environ, "FRAMESTREAM_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "model", "fetch", "--url", url, "--sha256", "1" * 64,
                             "--out", str(out)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert handler.started.wait(60), "the download never started"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: interrupted; no model file was left half-written"], stderr
    assert "Traceback" not in stderr and list(out.parent.iterdir()) == []
