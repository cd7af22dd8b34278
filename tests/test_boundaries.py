"""Where a run stops: DIR's boundary for symlinks, the metrics endpoint's address, the dependency floors."""

from __future__ import annotations

import logging
import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from client import bulk

from .test_bulk import bulk_main, entries
from .videos import write_video

ROOT = Path(__file__).resolve().parent.parent


# -- symlinks: DIR is the boundary for directories, not for files ------------------------------


@pytest.fixture
def linked_tree(tmp_path: Path) -> Path:
    """DIR with real videos, a directory link inside DIR, one out of DIR, and a file link out of DIR."""
    outside = tmp_path / "elsewhere"
    (outside / "deep").mkdir(parents=True)
    write_video(outside / "far.mp4", frames=3)
    write_video(outside / "deep" / "farther.mp4", frames=2)
    library = tmp_path / "library"
    library.mkdir()
    write_video(library / "kept.mp4", frames=4)
    src = tmp_path / "videos"
    (src / "z_archive" / "2024").mkdir(parents=True)
    write_video(src / "local.mp4", frames=5)
    write_video(src / "z_archive" / "2024" / "inner.mp4", frames=2)
    os.symlink("z_archive/2024", src / "a_latest")  # inside DIR: followed
    os.symlink(outside, src / "away")  # a directory out of DIR
    os.symlink("away", src / "hop")  # a link to that link: still out of DIR
    os.symlink(library / "kept.mp4", src / "kept.mp4")  # a file out of DIR: followed
    return src


def test_directory_links_out_of_dir_are_skipped_with_how_to_include_them(linked_tree: Path, tmp_path: Path,
                                                                           model_path: Path) -> None:
    os.symlink("/", linked_tree / "everything")  # was: the whole filesystem walked
    rc, summary = bulk_main(linked_tree, tmp_path / "out", model_path)
    files = entries(summary)
    assert rc == 0
    assert {p: f["frames"] for p, f in files.items() if f["status"] == "ok"} == {
        "local.mp4": 5, "a_latest/inner.mp4": 2, "kept.mp4": 4}
    for link in ("away", "hop", "everything"):
        assert files[link]["status"] == "skipped" and "--follow-links" in files[link]["error"], files[link]
    assert "outside" in files["away"]["error"] and os.path.realpath(tmp_path / "elsewhere") in files["away"]["error"]
    assert files["z_archive/2024"]["status"] == "skipped"  # already entered through a_latest
    assert not any(p.startswith(("away/", "hop/", "everything/")) for p in files)


def test_follow_links_walks_directory_links_out_of_dir_once_each(linked_tree: Path, tmp_path: Path,
                                                                   model_path: Path) -> None:
    rc, summary = bulk_main(linked_tree, tmp_path / "out", model_path, "--follow-links")
    files = entries(summary)
    assert rc == 0
    assert {p: f["frames"] for p, f in files.items() if f["status"] == "ok"} == {
        "local.mp4": 5, "a_latest/inner.mp4": 2, "kept.mp4": 4, "away/far.mp4": 3, "away/deep/farther.mp4": 2}
    assert files["hop"]["status"] == "skipped" and "already visited" in files["hop"]["error"]
    assert (tmp_path / "out" / "away" / "deep" / "farther.mp4.jsonl").is_file()


# -- the metrics endpoint listens on the loopback unless told otherwise -------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses (kernel hex, as /proc/net/tcp{,6} write them) of the sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


@pytest.fixture
def taken_port():
    """A port held by a listening socket on a loopback address: ``taken_port(addr) -> port``."""
    held: list[socket.socket] = []

    def take(addr: str, port: int = 0) -> int:
        s = socket.socket()
        s.bind((addr, port))
        s.listen()
        held.append(s)
        return s.getsockname()[1]

    yield take
    for s in held:
        s.close()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's socket table (Linux)")
def test_run_metrics_listen_on_127_0_0_1_only_by_default() -> None:
    pytest.importorskip("prometheus_client", reason="needs the metrics extra")
    from client.telemetry import RunTelemetry
    from .triton_server import free_ports

    (port,) = free_ports(1)
    telemetry = RunTelemetry(port)
    try:
        addresses = listening_addresses(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            answered = r.status
    finally:
        telemetry.close()
    assert addresses == {"0100007F"}  # 127.0.0.1 alone; 0.0.0.0 (00000000) would expose it to the network
    assert answered == 200 and telemetry.url == f"http://127.0.0.1:{port}/metrics"


def test_a_bulk_run_leaves_its_metrics_port_free_on_other_addresses(taken_port, tmp_path: Path,
                                                                      model_path: Path) -> None:
    pytest.importorskip("prometheus_client", reason="needs the metrics extra")
    port = taken_port("127.0.0.2")  # a 0.0.0.0 listener would collide with it
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=3)
    rc, summary = bulk_main(src, tmp_path / "out", model_path, "--metrics-port", str(port))
    assert rc == 0 and summary["totals"]["frames"] == 3


def test_metrics_addr_chooses_where_the_metrics_port_listens(taken_port, tmp_path: Path, model_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("prometheus_client", reason="needs the metrics extra")
    port = taken_port("127.0.0.1")
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=3)
    rc, _ = bulk_main(src, tmp_path / "out", model_path, "--metrics-port", str(port), "--metrics-addr", "127.0.0.3")
    assert rc == 0
    with caplog.at_level(logging.ERROR):
        rc = bulk.main([str(src), "--out", str(tmp_path / "out2"), "--model", str(model_path), "--no-progress",
                        "--metrics-port", str(port)])
    assert rc == 1
    assert f"--metrics-addr 127.0.0.1 --metrics-port {port}: Address already in use" in caplog.text
