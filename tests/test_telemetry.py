"""``--metrics-port``: the run's own Prometheus metrics, served over real HTTP."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="needs the metrics extra")

from client.telemetry import RunTelemetry  # noqa: E402

from .test_bulk import bulk_main  # noqa: E402
from .triton_server import free_ports  # noqa: E402
from .videos import write_video  # noqa: E402


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_counters_and_sampled_gauges_are_served(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    telemetry = RunTelemetry(port, addr="127.0.0.1")
    try:
        telemetry.watch(queue_depths=lambda: {"frames": 7, "batches": 2}, inflight=lambda: 3)
        for _ in range(5):
            telemetry.frame()
        telemetry.file_done("ok")
        telemetry.file_done("error")
        telemetry.sample()  # what the sampler thread does once a second
        text = scrape(port)
    finally:
        telemetry.close()
    assert "framestream_frames_total 5.0" in text
    assert 'framestream_files_total{status="ok"} 1.0' in text and 'framestream_files_total{status="error"} 1.0' in text
    assert 'framestream_queue_depth{queue="frames"} 7.0' in text and "framestream_inflight_requests 3.0" in text


def test_a_bulk_run_with_a_metrics_port_completes(tmp_path: Path, model_path: Path) -> None:
    src = tmp_path / "v"
    src.mkdir()
    write_video(src / "a.mp4", frames=4)
    (port,) = free_ports(1)
    rc, summary = bulk_main(src, tmp_path / "out", model_path, "--metrics-port", str(port))
    assert rc == 0 and summary["totals"]["frames"] == 4
