"""Issue #27, finding 8: what a new user's mistakes and odd files meet. A text file named like a
video is skipped (content decides), a damaged video stays an error; a run with no video is one
line and exit 1; a port out of range is one line; a CPU run says nothing of CuPy; ``--help``
shows no "(default: None)"; one file is "1 file"; an untracked box has no "#-1". Finding 9's
library side: a caller of ``bulk.main(argv)`` or ``run_bulk`` keeps its own signal handlers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client import backends, bulk, cli
from client.bulk_run import RunOptions, run_bulk
from client.draw import colour, draw_rows, label
from client.infer.embedded import EmbeddedBackend
from client.pipeline import PipelineConfig
from client.resume import ResumeLedger
from client.sinks import make_sink

from .fault_runner import Delegating
from .videos import write_video

ROOT = Path(__file__).resolve().parent.parent


def run(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in a fresh interpreter, stdout and stderr as text."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, **kwargs)


def entries(out: Path) -> dict[str, dict]:
    return {f["path"]: f for f in json.loads((out / "summary.json").read_text())["files"]}


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- content decides what is a video ------------------------------------------------------------


def test_a_file_named_like_a_video_that_holds_none_is_skipped_and_the_run_succeeds(
        tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "good.mp4", frames=4)
    (src / "notes.mp4").write_text("a text file, named like a video\n")
    (src / "noise.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    done = run("client.bulk", str(src), "--out", str(tmp_path / "out"), "--model", str(model_path), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    files = entries(tmp_path / "out")
    assert files["good.mp4"]["status"] == "ok"
    for name in ("notes.mp4", "noise.mkv"):
        assert files[name]["status"] == "skipped" and "not a video" in files[name]["error"], files[name]


def test_a_damaged_video_is_an_error_whatever_its_name_and_an_empty_mp4_too(tmp_path: Path, model_path: Path) -> None:
    """The line: FFmpeg recognises a video container in the content (an MP4's header whose index
    never came) -> a damaged video, an error; nothing recognised -> skipped. An empty file, or one
    of zero bytes only, has no content to judge: named like a video it is an error (a recording or
    copy that never got its bytes)."""
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "good.mp4", frames=4)
    header = write_video(tmp_path / "whole.mp4", frames=12).read_bytes()[:200]  # 'ftyp', no 'moov'
    (src / "cut.mp4").write_bytes(header)
    (src / "cut.bin").write_bytes(header)  # the same bytes under a name that says nothing
    (src / "zero.mp4").write_bytes(b"")
    (src / "zero.txt").write_bytes(b"")
    (src / "allocated.mp4").write_bytes(bytes(4096))  # space allocated, nothing written
    (src / "allocated.bin").write_bytes(bytes(4096))
    done = run("client.bulk", str(src), "--out", str(tmp_path / "out"), "--model", str(model_path), "--no-progress")
    assert done.returncode == 2, done.stderr[-2000:]
    files = entries(tmp_path / "out")
    for name in ("cut.mp4", "cut.bin"):
        assert files[name]["status"] == "error" and "damaged mov file" in files[name]["error"], files[name]
    assert files["zero.mp4"]["status"] == "error" and files["zero.txt"]["status"] == "skipped"
    assert files["allocated.mp4"]["status"] == "error" and "zero bytes only" in files["allocated.mp4"]["error"]
    assert files["allocated.bin"]["status"] == "skipped"
    assert files["good.mp4"]["status"] == "ok"
    alone = tmp_path / "alone"  # damaged videos alone are not "no videos found": the run reports them
    alone.mkdir()
    (alone / "cut.mp4").write_bytes(header)
    done = run("client.bulk", str(alone), "--out", str(tmp_path / "out2"), "--model", str(model_path), "--no-progress")
    assert done.returncode == 2 and entries(tmp_path / "out2")["cut.mp4"]["status"] == "error", done.stderr[-2000:]


# -- no videos: one line, exit 1, nothing written -----------------------------------------------


@pytest.mark.parametrize("content", ["empty", "no videos"])
def test_a_folder_without_videos_is_one_line_saying_where_it_looked_exit_1_nothing_written(
        tmp_path: Path, model_path: Path, content: str) -> None:
    src = tmp_path / "v"
    src.mkdir()
    if content == "no videos":
        (src / "readme.txt").write_text("hello\n")
        (src / "sub").mkdir()
        (src / "sub" / "notes.mp4").write_text("not a video\n")
    out = tmp_path / "out"
    done = run("client.bulk", str(src), "--out", str(out), "--model", str(model_path), "--no-progress")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"error: no videos found in {src} (looked at every file below"), line
    assert not out.exists()


def test_a_list_without_videos_and_an_empty_list_are_one_line_exit_1(tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("not a video\n")
    (tmp_path / "listed").write_text(f"{tmp_path / 'notes.mp4'}\n")
    (tmp_path / "empty").write_text("\n")
    for listing, expected in (("listed", "no videos found in the 1 file under"), ("empty", "no videos found")):
        done = run("client.bulk", "--from-list", str(tmp_path / listing), "--out", str(tmp_path / "out"),
                   "--model", str(model_path), "--no-progress")
        assert done.returncode == 1 and expected in one_line(done.stderr), done.stderr
    assert not (tmp_path / "out").exists()


# -- ports and numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (["--metrics-port", "99999"], "--metrics-port"),
    (["--grpc-port", "0"], "--grpc-port"),
    (["--http-port", "70000"], "--http-port"),
    (["--instances", "0"], "--instances"),
])
def test_serve_with_a_port_out_of_range_is_one_line_and_exit_1(args: list[str], option: str) -> None:
    done = run("server_config.local", *args)
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(f"error: {option} must be"), done.stderr


# -- the GPU notice, --help, counts, labels -----------------------------------------------------


@pytest.mark.skipif(Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").exists(),
                    reason="checks a machine without an NVIDIA GPU")
@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_a_cpu_run_says_nothing_of_cupy_and_one_file_is_1_file(tmp_path: Path, model_path: Path, device: str) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=3)
    done = run("client.bulk", str(src), "--out", str(tmp_path / "out"), "--model", str(model_path), "--no-progress",
               "--device", device)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CuPy" not in done.stderr and "framestream[gpu]" not in done.stderr
    assert "device: cpu (" in done.stderr
    table_total = next(line for line in done.stderr.splitlines() if "ok (" in line)
    assert table_total.startswith("1 file: 1 ok"), table_total  # the table's total line


@pytest.mark.parametrize("module", ["client.bulk", "client.render", "server_config.local"])
def test_help_shows_defaults_that_exist_and_no_default_none(module: str) -> None:
    done = run(module, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "(default: None)" not in text and "(default: False)" not in text
    if module == "client.bulk":
        assert "output directory (default: framestream-out)" in text  # real defaults are still shown


@pytest.mark.parametrize("track, text", [(None, "person 0.50"), (-1, "person 0.50"), (7, "person #7 0.50")])
def test_a_box_no_track_holds_is_labelled_and_coloured_as_untracked(track: int | None, text: str) -> None:
    from PIL import Image

    row = (2.0, 2.0, 30.0, 30.0, 0.5, 0, track)
    assert label(row, {0: "person"}) == text
    image = Image.new("RGB", (40, 40))
    draw_rows(image, [row], {0: "person"})
    assert image.getpixel((2, 20)) == colour(0 if track in (None, -1) else track)  # the outline's colour


# -- a program that calls the CLI keeps its own signal handlers ---------------------------------


def test_the_framestream_command_as_the_program_handles_signals_and_a_call_with_argv_does_not(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(bulk, "main", lambda argv, *, prog, **kwargs: calls.append(kwargs) or 0)
    monkeypatch.setattr(sys, "argv", ["framestream", "bulk", "DIR"])
    assert cli.main() == 0 and cli.main(["bulk", "DIR"]) == 0
    assert calls == [{"signals": True}, {"signals": False}]


class _Watches(Delegating):
    """The real backend; records the SIGINT handler in force while each batch is inferred."""

    def __init__(self, inner, seen: list) -> None:
        super().__init__(inner)
        self.seen = seen

    def infer(self, lane, batch):
        self.seen.append(signal.getsignal(signal.SIGINT))
        return self.inner.infer(lane, batch)


def test_run_bulk_and_an_in_process_cli_leave_the_callers_signal_handlers_in_place(
        tmp_path: Path, model_path: Path, monkeypatch) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=4)

    def callers(signum, frame):  # noqa: ARG001 - the calling program's own handler
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGINT, callers)
    try:
        seen: list = []
        backend = _Watches(EmbeddedBackend(model_path, sessions=1), seen)
        out = tmp_path / "lib"
        out.mkdir()
        try:
            result = run_bulk(RunOptions(src, out, PipelineConfig(workers=1), progress=False), backend,
                              make_sink("jsonl", out, names=backend.model.names),
                              ResumeLedger(out, backend.model.digest, {}))
        finally:
            backend.inner.close()
        assert [f.status for f in result.files] == ["ok"]
        make_backend = backends.make_backend
        monkeypatch.setattr(backends, "make_backend", lambda *a, **k: _Watches(make_backend(*a, **k), seen))
        rc = bulk.main([str(src), "--out", str(tmp_path / "cli"), "--model", str(model_path), "--no-progress"])
        assert rc == 0 and len(seen) >= 2
        assert all(handler is callers for handler in seen)
        assert signal.getsignal(signal.SIGINT) is callers
    finally:
        signal.signal(signal.SIGINT, previous)
