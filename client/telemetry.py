"""The bulk run's own Prometheus metrics (``--metrics-port``), so long runs can be watched.

Counters are bumped by the run as frames and files finish; gauges (frames/s, requests in
flight, queue depths) are sampled once a second. A private registry keeps tests and
embedding programs free of global state.

The endpoint listens on 127.0.0.1 unless told otherwise (``--metrics-addr``): run metrics
name the files being processed, so other machines see them only when the user asks
(``0.0.0.0`` in a container that Prometheus scrapes from another one).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from .errors import UsageError


class RunTelemetry:
    def __init__(self, port: int, *, addr: str = "127.0.0.1") -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
        except ImportError as e:
            raise UsageError("--metrics-port needs prometheus-client: pip install 'framestream[metrics]'") from e
        self.registry = CollectorRegistry()
        self.frames = Counter("framestream_frames", "Frames inferred and written", registry=self.registry)
        self.files = Counter("framestream_files", "Videos finished, by status", ["status"], registry=self.registry)
        self.fps = Gauge("framestream_frames_per_second", "Frames/s over the last sampling interval",
                         registry=self.registry)
        self.inflight = Gauge("framestream_inflight_requests", "Inference requests outstanding", registry=self.registry)
        self.queue_depth = Gauge("framestream_queue_depth", "Items waiting in a pipeline queue", ["queue"],
                                 registry=self.registry)
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise UsageError(f"--metrics-addr {addr} --metrics-port {port}: {e.strerror}") from e
        host = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{host}:{port}/metrics"
        self._frames_done = 0  # read by the sampler (the Counter's value has no public getter)
        self._sources: list[Callable[[], None]] = []
        self._sample_lock = threading.Lock()
        self._last_frames, self._last_t = 0, time.monotonic()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_every_second, name="telemetry", daemon=True)
        self._sampler.start()

    def watch(self, *, queue_depths: Callable[[], dict[str, int]], inflight: Callable[[], int]) -> None:
        def sample() -> None:
            for name, depth in queue_depths().items():
                self.queue_depth.labels(name).set(depth)
            self.inflight.set(inflight())

        self._sources.append(sample)

    def frame(self) -> None:
        self.frames.inc()
        self._frames_done += 1

    def file_done(self, status: str) -> None:
        self.files.labels(status).inc()

    def sample(self) -> None:
        """Set the gauges now; the sampler thread calls this once a second."""
        with self._sample_lock:
            now, frames = time.monotonic(), self._frames_done
            self.fps.set((frames - self._last_frames) / max(now - self._last_t, 1e-9))
            self._last_frames, self._last_t = frames, now
            for sample in list(self._sources):
                sample()

    def _sample_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
