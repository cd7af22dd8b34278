"""The Triton path against a real tritonserver (nvidia-pytriton's, on CPU) on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="needs the server extra: pip install 'framestream[server]'")
pytest.importorskip("pytriton", reason="needs the server extra: pip install 'framestream[server]'")

from client.infer.triton import TritonBackend, TritonOptions  # noqa: E402

from .test_bulk import bulk_main, entries, read_jsonl  # noqa: E402
from .triton_server import free_ports, make_repository, start_server  # noqa: E402
from .videos import write_video  # noqa: E402

pytestmark = pytest.mark.triton


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    return make_repository(tmp_path_factory.mktemp("triton"), model_path)


@pytest.fixture(scope="session")
def triton(repository: Path):
    server = start_server(repository)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("clips")
    write_video(src / "a.mp4", frames=20, size_wh=(160, 96))
    write_video(src / "b.mp4", frames=12, size_wh=(96, 160))
    write_video(src / "c.mkv", frames=9, size_wh=(176, 144), codec="mpeg4")
    return src


def server_args(server, *extra: str) -> list[str]:
    return ["--server", server.config.grpc_url, "--metrics-url", server.config.metrics_url, "--retry-seconds", "3", *extra]


def assert_same_detections(dir_a: Path, dir_b: Path) -> None:
    outputs = sorted(p.relative_to(dir_a) for p in dir_a.rglob("*.jsonl"))
    assert outputs and outputs == sorted(p.relative_to(dir_b) for p in dir_b.rglob("*.jsonl"))
    boxes = 0
    for rel in outputs:
        a, b = read_jsonl(dir_a / rel), read_jsonl(dir_b / rel)
        assert [r["frame"] for r in a] == [r["frame"] for r in b]
        for ra, rb in zip(a, b):
            da, db = np.array(ra["detections"]).reshape(-1, 6), np.array(rb["detections"]).reshape(-1, 6)
            assert len(da) == len(db)
            np.testing.assert_allclose(da[:, :4], db[:, :4], atol=0.5)
            assert (da[:, 5] == db[:, 5]).all()
            boxes += len(da)
    assert boxes > 0


def our_shm_files() -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith("framestream_")]


def registered_regions(server) -> list[str]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.config.grpc_url) as client:
        return list(client.get_system_shared_memory_status().regions)


@pytest.mark.parametrize("shm", ["system", "off"])
def test_triton_run_gives_the_embedded_detections_frame_by_frame(triton, clips, tmp_path, model_path, shm) -> None:
    bulk_main(clips, tmp_path / "embedded", model_path)
    rc, summary = bulk_main(clips, tmp_path / "triton", model_path, *server_args(triton, "--shm", shm))
    assert rc == 0
    assert summary["backend"]["transport"] == ("system_shm" if shm == "system" else "grpc")
    assert_same_detections(tmp_path / "embedded", tmp_path / "triton")
    assert registered_regions(triton) == [] and our_shm_files() == []


def test_dynamic_batching_merges_requests_and_the_inflight_bound_holds(triton, clips, tmp_path, model_path) -> None:
    rc, summary = bulk_main(clips, tmp_path / "out", model_path, *server_args(triton, "--batch", "1", "--inflight", "3"))
    assert rc == 0
    server = summary["server"]
    assert server["inferences"] == summary["totals"]["frames"] == 41
    assert server["executions"] < server["inferences"], "several requests in flight must batch on the server"
    assert server["request_failures"] == 0 and server["avg_batch_size"] > 1
    assert summary["backend"]["inflight_limit"] == 3
    assert summary["backend"]["inflight_peak"] == 3  # reached under load, never exceeded


def test_inflight_counter_never_exceeds_the_lane_count_under_load(triton, model_path) -> None:
    import threading

    backend = TritonBackend(TritonOptions(triton.config.grpc_url, inflight=2), batch=4, local_model=model_path)
    try:
        batch = np.full((4, 192, 320, 3), 114, np.uint8)
        threads = [threading.Thread(target=lambda lane=lane: [backend.infer(lane, batch) for _ in range(4)])
                   for lane in range(backend.lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert backend.in_flight.peak == 2 and backend.in_flight.now == 0
    finally:
        backend.close()
    assert registered_regions(triton) == [] and our_shm_files() == []


def test_a_batch_built_inside_its_lane_region_is_what_the_server_infers(triton, model_path) -> None:
    from client.errors import ServerError

    from .videos import frame_image

    backend = TritonBackend(TritonOptions(triton.config.grpc_url, inflight=2, shm="system"), batch=4,
                            local_model=model_path)
    try:
        assert backend.shm == "system"
        frames = np.stack([frame_image(i, 320, 192) for i in range(3)])
        view = backend.batch_buffer(0, frames.shape)
        assert np.shares_memory(view, backend._ring._flat[0]) and view.flags.c_contiguous
        for slot, image in enumerate(frames):  # as the pipeline does: frame by frame, in place
            view[slot] = image
        in_place = backend.infer(0, view)
        copied = backend.infer(1, frames.copy())  # any other array is copied into lane 1's region
        assert in_place.num_detections.sum() > 0
        np.testing.assert_array_equal(in_place.num_detections, copied.num_detections)
        np.testing.assert_allclose(in_place.detections, copied.detections, atol=1e-4)
        with pytest.raises(ServerError, match="shared-memory regions hold"):
            backend.batch_buffer(0, (64, 640, 640, 3))
    finally:
        backend.close()
    assert registered_regions(triton) == [] and our_shm_files() == []


def test_ctrl_c_mid_run_releases_every_shared_memory_region(triton, tmp_path, model_path) -> None:
    src = tmp_path / "long"
    src.mkdir()
    write_video(src / "long.mp4", frames=400, size_wh=(160, 96))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model_path),
           "--no-progress", "--shm", "system", "--inflight", "2", *server_args(triton)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (registered_regions(triton) and list(out.glob(".*.tmp"))):
        time.sleep(0.2)
    assert registered_regions(triton), "the run should have registered its regions"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert registered_regions(triton) == [] and our_shm_files() == []
    assert not (out / "long.mp4.jsonl").exists()
    assert len(read_jsonl(out / "long.mp4.partial.jsonl")) > 0


def test_wrong_model_name_contract_mismatch_and_no_server_exit_1_with_one_line(triton, clips, tmp_path, model_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "client.bulk", str(clips), "--out", str(tmp_path / "o"),
                               "--model", str(model_path), *args], capture_output=True, text=True, timeout=120)

    wrong_name = run("--server", triton.config.grpc_url, "--model-name", "nope")
    assert wrong_name.returncode == 1 and "'nope' is not ready" in wrong_name.stderr
    mismatch = run("--server", triton.config.grpc_url, "--model-name", "other")
    assert mismatch.returncode == 1 and "the contract needs images UINT8" in mismatch.stderr
    (port,) = free_ports(1)
    down = run("--server", f"127.0.0.1:{port}")
    assert down.returncode == 1 and "cannot reach Triton" in down.stderr
    for result in (wrong_name, mismatch, down):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "a.mp4.jsonl").exists()


def test_server_killed_mid_run_fails_the_files_in_flight_and_a_rerun_completes_them(repository, tmp_path, model_path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    for name, frames in (("a.mp4", 300), ("b.mp4", 40), ("c.mp4", 20)):
        write_video(src / name, frames=frames, size_wh=(160, 96))
    ports = free_ports(3)
    server = start_server(repository, ports)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model_path),
           "--no-progress", *server_args(server)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob(".a.mp4.jsonl.tmp")):
            time.sleep(0.2)
        time.sleep(1.5)
        server.kill()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        summary = json.loads((out / "summary.json").read_text())
        failed = {p for p, f in entries(summary).items() if f["status"] == "error"}
        assert "a.mp4" in failed
        for rel in failed:
            assert not (out / f"{rel}.jsonl").exists(), f"{rel} must not look complete"
        assert our_shm_files() == []
        # Restart on the same ports and rerun: exactly the failed files are redone.
        server.stop()
        server = start_server(repository, ports)
        rc, summary = bulk_main(src, out, model_path, *server_args(server))
        assert rc == 0
        redone = {p for p, f in entries(summary).items() if not f.get("resumed")}
        assert redone == failed
    finally:
        server.stop()
    bulk_main(src, tmp_path / "embedded", model_path)
    assert_same_detections(tmp_path / "embedded", out)
