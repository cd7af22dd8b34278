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

pytest.importorskip("tritonclient.grpc", reason="needs the client extra: pip install 'framestream[client]'")

from client.contract import model_digest  # noqa: E402
from client.infer.triton import TritonBackend, TritonOptions  # noqa: E402
from client.metrics import scrape  # noqa: E402

from .test_bulk import bulk_main, entries, read_jsonl  # noqa: E402
from .triton_server import add_bare_model, add_gate_model, free_ports, make_repository, start_server  # noqa: E402
from .videos import write_video  # noqa: E402

pytestmark = pytest.mark.triton


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    return make_repository(tmp_path_factory.mktemp("triton"), model_path)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, model_path: Path):
    repo = make_repository(tmp_path_factory.mktemp("served"), model_path)
    add_bare_model(repo, model_path)
    add_gate_model(repo)
    server = start_server(repo)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("clips")
    write_video(src / "a.mp4", frames=20, size_wh=(160, 96))
    write_video(src / "b.mp4", frames=12, size_wh=(96, 160))
    write_video(src / "c.mkv", frames=9, size_wh=(176, 144), codec="mpeg4")
    return src


def test_the_served_model_runs_numpy_and_onnxruntime_from_the_server_s_environment_not_the_client_s(
        triton) -> None:
    from server_config.triton_env import triton_env

    stubs = [pid for pid in os.listdir("/proc") if pid.isdigit() and pid != str(triton.process.pid)
             and _process_group(pid) == triton.process.pid]
    loaded = set()
    for pid in stubs:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        loaded |= {line.split()[-1] for line in maps.splitlines() if "/numpy/" in line or "/onnxruntime/" in line}
    assert any("/numpy/" in p for p in loaded) and any("/onnxruntime/" in p for p in loaded), loaded
    server_site = str(triton_env().site_packages) + "/"
    assert all(p.startswith(server_site) for p in loaded), sorted(loaded)
    assert not Path(np.__file__).is_relative_to(triton_env().site_packages), "the client imports its own numpy"


def _process_group(pid: str) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[2])  # after the state and the parent: the process group


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


def bulk_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.bulk", *args], capture_output=True, text=True, timeout=120)


def wait_for(what: str, event, timeout_s: float = 120.0) -> None:
    """Poll until ``event()`` is true; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout_s
    while not event():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def inferences(server) -> float:
    counters = scrape(server.config.metrics_url, "yolo", timeout_s=2.0)
    return counters["inferences"] if counters else 0.0


def our_shm_files(*pids: int) -> list[str]:
    """Client regions (framestream_<kind>_<pid>_...) of this process or ``pids``: other test runs
    on the machine have their own."""
    mine = {str(pid) for pid in (os.getpid(), *pids)}
    owner = lambda name: (name.split("_") + ["", "", ""])[2]  # noqa: E731
    return [n for n in os.listdir("/dev/shm") if n.startswith("framestream_") and owner(n) in mine]


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

    backend = TritonBackend(TritonOptions(triton.config.grpc_url, inflight=2), batch=4)
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

    backend = TritonBackend(TritonOptions(triton.config.grpc_url, inflight=2, shm="system"), batch=4)
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


def test_closing_a_ring_while_triton_still_holds_its_region_waits_and_then_unregisters_it(triton) -> None:
    """Triton 2.50+ refuses to unregister a region a request still holds ("currently in use"),
    which on a loaded machine can outlast the response reaching the client. The 'gate' model
    (tests/triton_server.py) holds its request, and so the region, until the test opens it."""
    import threading

    import tritonclient.grpc as grpcclient

    from client.contract import INPUT, NUM_DETECTIONS
    from client.infer.shm import SystemShmRing

    gate = triton.config.model_repository / "gate.open"
    answers: list = []
    with grpcclient.InferenceServerClient(triton.config.grpc_url) as client:
        ring = SystemShmRing(client, lanes=1, byte_size=2 * 96 * 160 * 3)
        image = grpcclient.InferInput(INPUT.name, [2, 96, 160, 3], INPUT.triton_dtype)
        image.set_shared_memory(*ring.write(0, np.full((2, 96, 160, 3), 114, np.uint8)))
        client.async_infer("gate", [image], callback=lambda result, error: answers.append((result, error)),
                           outputs=[grpcclient.InferRequestedOutput(NUM_DETECTIONS.name)])
        wait_for("the request held by the model", gate.with_name("gate.arrived").exists)
        opener = threading.Timer(1.0, gate.touch)  # the request holds the region until then
        opener.start()
        try:
            ring.close()  # refused while the request holds the region, then let go
        finally:
            opener.join()
            wait_for("the request answered", lambda: answers)
    result, error = answers[0]
    assert error is None, error.message()
    assert result.as_numpy(NUM_DETECTIONS.name).shape == (2, 1)
    assert registered_regions(triton) == [] and our_shm_files() == []


def test_ctrl_c_mid_run_releases_every_shared_memory_region(triton, tmp_path, model_path) -> None:
    src = tmp_path / "long"
    src.mkdir()
    write_video(src / "long.mp4", frames=400, size_wh=(160, 96))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model_path),
           "--no-progress", "--shm", "system", "--inflight", "2", *server_args(triton)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for("regions registered and frames written",
             lambda: registered_regions(triton) and any(p.stat().st_size for p in out.glob(".*.tmp")))
    proc.send_signal(signal.SIGSTOP)  # frozen mid-run, however fast the machine
    assert not (out / "long.mp4.jsonl").exists(), "long.mp4 (400 frames) must still be in flight"
    proc.send_signal(signal.SIGINT)  # pending until the process runs again
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert registered_regions(triton) == [] and our_shm_files(proc.pid) == []
    assert not (out / "long.mp4.jsonl").exists()
    assert len(read_jsonl(out / "long.mp4.jsonl.partial")) > 0


def test_wrong_model_name_contract_mismatch_and_no_server_exit_1_with_one_line(triton, clips, tmp_path, model_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return bulk_cli(str(clips), "--out", str(tmp_path / "o"), *args)

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
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--no-progress", *server_args(server)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("the server inferring the run's frames", lambda: inferences(server) > 0)
        proc.send_signal(signal.SIGSTOP)  # frozen mid-run, however fast the machine
        assert not (out / "a.mp4.jsonl").exists(), "a.mp4 (300 frames) must still be in flight"
        server.kill()
        assert server.shm_leftovers(), "a killed server leaves its python-backend regions"
        proc.send_signal(signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        summary = json.loads((out / "summary.json").read_text())
        failed = {p: f for p, f in entries(summary).items() if f["status"] != "ok"}
        assert failed["a.mp4"]["status"] == "error" and "unreachable" in failed["a.mp4"]["error"]
        assert {f["status"] for f in failed.values()} <= {"error", "not_processed"}  # not started: not processed
        assert "unreachable" in summary["stopped"]
        for rel in failed:
            assert not (out / f"{rel}.jsonl").exists(), f"{rel} must not look complete"
        assert our_shm_files(proc.pid) == []
        # Restart on the same ports and rerun: exactly the failed files are redone.
        server.stop()
        assert server.shm_leftovers() == [], "stop() removes what the killed server left in /dev/shm"
        server = start_server(repository, ports)
        rc, summary = bulk_main(src, out, model_path, *server_args(server))
        assert rc == 0
        redone = {p for p, f in entries(summary).items() if not f.get("resumed")}
        assert redone == set(failed)
    finally:
        server.stop()
    assert server.shm_leftovers() == []
    bulk_main(src, tmp_path / "embedded", model_path)
    assert_same_detections(tmp_path / "embedded", out)


def test_sigterm_while_the_server_is_down_stops_at_once_instead_of_waiting_out_the_retries(
        repository, tmp_path, model_path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=300, size_wh=(160, 96))
    server = start_server(repository)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--no-progress",
           *server_args(server), "--retry-seconds", "600"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("the server inferring the run's frames", lambda: inferences(server) > 0)
        server.kill()  # from now on every request is retried, for up to 600 s
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)  # far below the retry budget: the stop did not wait it out
    finally:
        server.stop()
    assert proc.returncode == 143, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "interrupted (SIGTERM)"
    assert entries(summary)["a.mp4"]["status"] == "error" and not (out / "a.mp4.jsonl").exists()
    assert our_shm_files(proc.pid) == []


def test_server_stopped_cleanly_mid_run_is_waited_for_and_the_run_completes_once_it_is_back(
        repository, tmp_path, model_path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    for name, frames in (("a.mp4", 300), ("b.mp4", 30)):
        write_video(src / name, frames=frames, size_wh=(160, 96))
    ports = free_ports(3)
    server = start_server(repository, ports)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--no-progress",
           *server_args(server), "--retry-seconds", "120"]  # a budget for the restart, not a timing
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("the server inferring the run's frames", lambda: inferences(server) > 0)
        proc.send_signal(signal.SIGSTOP)
        assert not (out / "a.mp4.jsonl").exists(), "a.mp4 (300 frames) must still need the server"
        server.process.send_signal(signal.SIGINT)  # Ctrl-C: Triton unloads its models, then exits
        proc.send_signal(signal.SIGCONT)  # the run meets the unloading model, then no server
        server.process.wait(timeout=120)
        server.stop()
        server = start_server(repository, ports)
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        summary = json.loads((out / "summary.json").read_text())
        assert {p: f["status"] for p, f in entries(summary).items()} == {"a.mp4": "ok", "b.mp4": "ok"}
    finally:
        server.stop()
    assert server.shm_leftovers() == [] and our_shm_files(proc.pid) == []
    bulk_main(src, tmp_path / "embedded", model_path)
    assert_same_detections(tmp_path / "embedded", out)


def test_serving_another_model_under_the_same_name_redoes_every_video_with_its_size_and_digest(
        clips, tmp_path, model_path) -> None:
    from server_config.model.build import build_model
    from server_config.model.files import save_onnx_atomically

    model_b = tmp_path / "b.onnx"
    save_onnx_atomically(build_model(size="n", imgsz=256, seed=1), model_b)
    repo_a, repo_b = make_repository(tmp_path / "a", model_path), make_repository(tmp_path / "b", model_b)
    ports = free_ports(3)
    out = tmp_path / "out"
    server = start_server(repo_a, ports)
    try:
        rc, first = bulk_main(clips, out, model_path, *server_args(server))
        assert rc == 0 and first["model"]["imgsz"] == [320, 320]
        assert first["model"]["digest"] == model_digest(model_path) and first["model"]["path"] is None
        server.stop()
        server = start_server(repo_b, ports)  # same address, same model name, other model
        rc, second = bulk_main(clips, out, model_path, *server_args(server))  # the same command
        assert rc == 0
        assert [f["path"] for f in second["files"] if f.get("resumed")] == []
        assert second["model"]["imgsz"] == [256, 256] and second["model"]["digest"] == model_digest(model_b)
        rc, third = bulk_main(clips, out, model_path, *server_args(server))
        assert rc == 0 and all(f.get("resumed") for f in third["files"])
    finally:
        server.stop()


def test_with_server_a_local_model_file_in_the_default_place_is_neither_read_nor_built(
        triton, clips, tmp_path, monkeypatch) -> None:
    from client import bulk, model_file

    default = tmp_path / "repo" / "yolo" / "1" / "model.onnx"
    monkeypatch.setattr(model_file, "_default_model", lambda: default)
    rc = bulk.main([str(clips), "--out", str(tmp_path / "o1"), "--no-progress", *server_args(triton)])
    assert rc == 0 and not default.exists(), "nothing is built for a --server run"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"not the served model")  # read, it would fail the run
    rc = bulk.main([str(clips), "--out", str(tmp_path / "o2"), "--no-progress", *server_args(triton)])
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert rc == 0 and summary["model"]["imgsz"] == [320, 320] and summary["model"]["path"] is None
    assert default.read_bytes() == b"not the served model"


def test_a_served_model_without_framestream_parameters_is_refused_in_one_line_saying_how_to_add_them(
        triton, clips, tmp_path) -> None:
    result = bulk_cli(str(clips), "--out", str(tmp_path / "o"), "--server", triton.config.grpc_url,
                      "--model-name", "bare")
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "python -m server_config.model stamp" in result.stderr
    assert not (tmp_path / "o" / "a.mp4.jsonl").exists()


def test_shm_cuda_without_cupy_is_one_line_not_a_traceback(triton, clips, tmp_path) -> None:
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    result = bulk_cli(str(clips), "--out", str(tmp_path / "o"), "--server", triton.config.grpc_url,
                      "--shm", "cuda", "--device", "cpu")
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "--shm cuda needs CuPy" in result.stderr
