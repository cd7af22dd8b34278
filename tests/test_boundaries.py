"""Where a run stops: DIR's boundary for symlinks, the metrics endpoint's address, the dependency floors."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
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


# -- dependencies: one onnxruntime per environment, floors that were run -------------------------

# The lowest versions the code was run on, and what breaks below each. Checked by installing
# the floors together and running the suite: .ci/run does it on every run (uv's
# --resolution lowest-direct), outside the install and Docker tests. av 14.0 and
# prometheus-client 0.19 failed it once.
FLOORS = {
    "av": ("14.1", "VideoFrame.rotation: without it every file fails as an internal error"),
    "numpy": ("1.24", "ran the suite"),
    "onnx": ("1.16", "ran the suite (models are written with IR version 8)"),
    "onnxruntime": ("1.19", "quantize feeds its calibration one frame a stride (CalibStridedMinMax; 1.18 has none)"),
    "onnxruntime-gpu": ("1.27", "the first onnxruntime-gpu on PyPI built for CUDA 13 (cupy-cuda13x, cuda-python 13.x, "
                        "the CUDA 13 image); chosen by CUDA, not yet run on a GPU (issue 26)"),
    "opencv-python-headless": ("4.8", "ran the suite"),
    "pyarrow": ("14", "ran the suite"),
    "prometheus-client": ("0.20", "start_http_server returns (server, thread), which RunTelemetry shuts down"),
    "pynvvideocodec": ("2.0", "DecodedFrame.getPTS(), by which NVDEC's frames are placed: 1.x frames have none"),
    "matplotlib": ("3.7", "ran the report and render tests"),
    "pillow": ("10.1", "ImageFont.load_default(size=), with which client.render labels boxes"),
    "trackers": ("2.6", "ran the tracking tests (update() with timestamps)"),
    "ray": ("2.60", "ran tests/test_ray.py (ray.cluster_utils.Cluster on loopback, threaded actors)"),
}
# Where the project installs itself; each must give exactly one onnxruntime.
INSTALLERS = [".ci/run", "docker/Dockerfile", "docker/Dockerfile.cpu"]
ONNXRUNTIME = re.compile(r"onnxruntime([-_.].+)?")


def project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(extras: set[str] = frozenset()) -> list:
    """The base requirements and those of ``extras``, as pyproject.toml declares them."""
    from packaging.requirements import Requirement

    declared = project()
    unknown = extras - set(declared["optional-dependencies"])
    assert not unknown, f"no such extra: {unknown}"
    texts = declared["dependencies"] + [r for e in sorted(extras) for r in declared["optional-dependencies"][e]]
    return [Requirement(t) for t in texts]


def onnxruntimes(extras: set[str] = frozenset()) -> set[str]:
    return {r.name.lower() for r in requirements(extras) if ONNXRUNTIME.fullmatch(r.name.lower())}


def test_the_base_brings_no_onnxruntime_and_cpu_or_gpu_brings_exactly_one() -> None:
    others = set(project()["optional-dependencies"]) - {"cpu", "gpu"}
    assert onnxruntimes() == set()  # so the gpu extra never lands beside a CPU onnxruntime
    assert onnxruntimes({"cpu"}) == {"onnxruntime"} and onnxruntimes({"gpu"}) == {"onnxruntime-gpu"}
    assert {e: onnxruntimes({e}) for e in others} == {e: set() for e in others}


@pytest.mark.parametrize("path", INSTALLERS)
def test_each_scripted_install_brings_exactly_one_onnxruntime(path: str) -> None:
    installs = re.findall(r"pip install [^\n]*-e '\.\[([a-z0-9,-]+)\]'", (ROOT / path).read_text())
    assert installs, f"{path}: no pip install -e '.[...]' found"
    for extras in installs:
        assert len(onnxruntimes(set(extras.split(",")))) == 1, f"{path}: '.[{extras}]'"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_each_dependency_floor_is_the_version_the_code_was_run_on(name: str) -> None:
    from packaging.version import Version

    everything = requirements(set(project()["optional-dependencies"]))
    floors = [s.version for r in everything if r.name.lower() == name for s in r.specifier if s.operator == ">="]
    assert floors, f"{name} has no floor in pyproject.toml"
    assert min(floors, key=Version) == FLOORS[name][0], f"{name}: {FLOORS[name][1]}"


@pytest.mark.parametrize(("version", "allowed"), [("1.0.2", False), ("2.0.0", True), ("2.2.4", True), ("3.0.0", False)])
def test_the_gpu_extra_takes_pynvvideocodec_2_only(version: str, allowed: bool) -> None:
    (pin,) = [r for r in requirements({"gpu"}) if r.name.lower() == "pynvvideocodec"]
    assert pin.specifier.contains(version) == allowed, f"{pin}: the NVDEC driver is written against the 2.x API"


def test_without_any_onnxruntime_the_embedded_run_says_which_extra_to_install(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=2)
    blocked = ("import sys; sys.modules['onnxruntime'] = None  # as after 'pip install -e .': no onnxruntime\n"
               "from client import bulk; sys.exit(bulk.main(sys.argv[1:], signals=True))")
    done = subprocess.run([sys.executable, "-c", blocked, str(src), "--out", str(tmp_path / "out"), "--model",
                           str(model_path), "--no-progress", "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "pip install 'framestream[cpu]'" in done.stderr and "Traceback" not in done.stderr
