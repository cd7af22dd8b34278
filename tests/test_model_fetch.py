"""``python -m server_config.model fetch``: a trained detector downloaded with its checksum checked
and its licence stated, wrapped, and made the default model; and ``wrap``/``fetch`` replacing the
untrained model a first run built at the default place (only that one) without ``--force``.

No model hub is reachable from the test machines: a real HTTP server on 127.0.0.1 serves a small
YOLO export (tests/synthetic_exports.py), and the real ``fetch`` command downloads it through
``--url`` (a mirror of a registry entry, or with ``--sha256`` one's own export).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from server_config.model.contract_graph import HeadLayout

from .synthetic_exports import make_export
from .videos import write_video

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "cat", 1: "dog", 2: "bird"}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's output, not the server's access log
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder: (its base URL, the folder)."""
    root = tmp_path_factory.mktemp("served")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def export(served: tuple[str, Path]) -> tuple[str, str]:
    """A small trained-model stand-in on the server: (its URL, its SHA-256)."""
    url, root = served
    data = make_export(HeadLayout.ULTRALYTICS, names=NAMES).SerializeToString()
    (root / "detector.onnx").write_bytes(data)
    return f"{url}/detector.onnx", hashlib.sha256(data).hexdigest()


def model_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server_config.model", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "FRAMESTREAM_HOME": str(home)})


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "model.onnx") if folder.exists() else []


def one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def test_fetch_downloads_checks_wraps_and_makes_it_the_default_model(export: tuple[str, str], tmp_path: Path) -> None:
    url, sha = export
    home = tmp_path / "home"
    done = model_cli(home, "fetch", "--url", url, "--sha256", sha)
    assert done.returncode == 0, done.stderr
    assert re.search(r"downloading detector\.onnx: [\d.]+ kB of [\d.]+ kB \(100%\)", done.stderr), done.stderr
    assert "licence:" in done.stderr and "default model" in done.stderr
    meta = metadata(home / "model.onnx")
    assert meta["source"] == f"fetched detector.onnx (sha256 {sha[:12]})"
    assert json.loads(meta["names"]) == {str(k): v for k, v in NAMES.items()}
    assert "framestream_untrained" not in meta
    assert leftovers(home) == []  # the download's temporary is gone

    # The bulk CLI's default model is the fetched one: no untrained notice, its classes.
    src = tmp_path / "src"
    src.mkdir()
    write_video(src / "a.mp4", frames=4, size_wh=(160, 96))
    run = subprocess.run([sys.executable, "-m", "client.bulk", str(src), "--out", str(tmp_path / "out"), "--no-progress",
                          "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "FRAMESTREAM_HOME": str(home)})
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["path"] == str(home / "model.onnx") and summary["model"]["source"].startswith("fetched")
    assert "UNTRAINED" not in run.stderr and run.stderr.strip().splitlines()[-1].startswith("detections: ")


def test_fetch_and_wrap_replace_the_untrained_default_a_first_run_built_without_force(
        export: tuple[str, str], served: tuple[str, Path], tmp_path: Path) -> None:
    url, sha = export
    home = tmp_path / "home"
    assert model_cli(home, "build", "--imgsz", "320").returncode == 0  # what a first run puts there
    assert "framestream_untrained" in metadata(home / "model.onnx")
    done = model_cli(home, "fetch", "--url", url, "--sha256", sha)
    assert done.returncode == 0, done.stderr
    assert "replacing the untrained built-in model" in done.stderr
    assert metadata(home / "model.onnx")["source"].startswith("fetched")

    # README's own route: wrap an export after the quick start built the untrained default.
    other = tmp_path / "home2"
    assert model_cli(other, "build", "--imgsz", "320").returncode == 0
    local = tmp_path / "yolov8n.onnx"
    local.write_bytes((served[1] / "detector.onnx").read_bytes())
    done = model_cli(other, "wrap", str(local))
    assert done.returncode == 0, done.stderr
    assert metadata(other / "model.onnx")["source"] == "wrapped yolov8n.onnx"


def test_anything_but_the_untrained_default_still_needs_force(export: tuple[str, str], served: tuple[str, Path],
                                                              tmp_path: Path) -> None:
    url, sha = export
    home = tmp_path / "home"
    assert model_cli(home, "fetch", "--url", url, "--sha256", sha).returncode == 0
    before = (home / "model.onnx").read_bytes()
    local = tmp_path / "mine.onnx"
    local.write_bytes((served[1] / "detector.onnx").read_bytes())
    for args in (("fetch", "--url", url, "--sha256", sha), ("wrap", str(local))):  # a trained default: kept
        done = model_cli(home, *args)
        assert done.returncode == 1 and "already exists; pass --force" in one_error_line(done)
        assert (home / "model.onnx").read_bytes() == before
    elsewhere = tmp_path / "elsewhere.onnx"  # an untrained model, but not the default: kept too
    assert model_cli(home, "build", "--imgsz", "320", "--out", str(elsewhere)).returncode == 0
    done = model_cli(home, "wrap", str(local), "--out", str(elsewhere))
    assert done.returncode == 1 and "already exists; pass --force" in one_error_line(done)
    assert "framestream_untrained" in metadata(elsewhere)
    done = model_cli(home, "fetch", "--url", url, "--sha256", sha, "--force")
    assert done.returncode == 0, done.stderr


def test_a_checksum_mismatch_is_one_line_exit_2_and_leaves_nothing_behind(export: tuple[str, str], tmp_path: Path) -> None:
    url, sha = export
    home = tmp_path / "home"
    wrong = "0" * 64
    done = model_cli(home, "fetch", "--url", url, "--sha256", wrong)
    assert done.returncode == 2
    line = one_error_line(done)
    assert f"SHA-256 {sha} is not the expected {wrong}" in line and "nothing was written" in line
    assert not (home / "model.onnx").exists() and leftovers(home) == []

    # With the untrained default there, a failed fetch leaves it as it was.
    assert model_cli(home, "build", "--imgsz", "320").returncode == 0
    before = (home / "model.onnx").read_bytes()
    done = model_cli(home, "fetch", "--url", url, "--sha256", wrong)
    assert done.returncode == 2 and (home / "model.onnx").read_bytes() == before and leftovers(home) == []


def test_a_registry_name_states_its_licence_and_its_pinned_checksum_decides_on_a_mirror(
        export: tuple[str, str], tmp_path: Path) -> None:
    """``fetch yolov8n --url MIRROR``: the mirror serves another file than the one published, so
    its size and checksum are refused, after the licence was stated."""
    from server_config.model.fetch import REGISTRY

    entry = REGISTRY["yolov8n"]
    assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256) and entry.size > 1_000_000 and "AGPL-3.0" in entry.licence
    assert re.fullmatch(r"https://huggingface\.co/[\w-]+/[\w-]+/resolve/[0-9a-f]{40}/.+\.onnx", entry.url)
    url, _ = export
    home = tmp_path / "home"
    done = model_cli(home, "fetch", "yolov8n", "--url", url)
    assert done.returncode == 2
    assert "licence: AGPL-3.0" in done.stderr
    assert f"the published file has {entry.size}" in one_error_line(done)
    assert leftovers(home) == [] and not (home / "model.onnx").exists()


@pytest.mark.parametrize("path, expected, code", [
    ("/missing.onnx", "HTTP 404", 2),  # the download failed: work failed
    ("/not-a-model.onnx", "not a valid ONNX", 1),  # the file named (URL and SHA-256) is no model: usage
])
def test_an_http_error_or_a_file_that_is_no_model_is_one_line(served: tuple[str, Path], tmp_path: Path, path: str,
                                                              expected: str, code: int) -> None:
    url, root = served
    (root / "not-a-model.onnx").write_bytes(b"<html>a login page</html>")
    sha = hashlib.sha256(b"<html>a login page</html>").hexdigest()
    home = tmp_path / "home"
    done = model_cli(home, "fetch", "--url", url + path, "--sha256", sha)
    assert done.returncode == code and expected in one_error_line(done)
    assert leftovers(home) == [] and not (home / "model.onnx").exists()


def test_nothing_listening_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing answers there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = model_cli(tmp_path / "home", "fetch", "--url", f"http://127.0.0.1:{port}/m.onnx", "--sha256", "1" * 64)
    assert done.returncode == 2 and "cannot download" in one_error_line(done)


@pytest.mark.parametrize("args, expected", [
    ((), "name a model to fetch (yolov8n)"),
    (("nope",), "no model 'nope' to fetch"),
    (("--url", "http://127.0.0.1:9/m.onnx"), "--url without a NAME needs --sha256"),
    (("--url", "ftp://example.org/m.onnx", "--sha256", "1" * 64), "http:// or https://"),
    (("yolov8n", "--sha256", "xyz"), "64 hex digits"),
])
def test_usage_mistakes_are_one_line_before_anything_is_downloaded(tmp_path: Path, args, expected: str) -> None:
    done = model_cli(tmp_path / "home", "fetch", *args)
    assert done.returncode == 1 and expected in one_error_line(done)
    assert not (tmp_path / "home").exists()
