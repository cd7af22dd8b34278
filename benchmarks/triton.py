"""Embedded vs Triton (gRPC payload, system shared memory) at 1, 2 and 4 requests in flight.

    python -m benchmarks.triton [--clips 4] [--frames 30]

One run, same clips, same 640 model: frames/s, the ratio to embedded, and what Triton's
metrics say (average server batch size, queue and compute time). Written to
benchmarks/results/triton.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import bulk_summary, clip_args, clips_720p, ensure_model, table, write_result
from tests.triton_server import make_repository, start_server

BATCH = 8


def main() -> None:
    args = clip_args(__doc__.splitlines()[0], clips=4, frames=30)
    model = ensure_model(640)
    src, _ = clips_720p(args)

    def run(*flags: str) -> dict:
        return bulk_summary(src, model, "--batch", str(BATCH), *flags)

    embedded = run()["totals"]["fps"]
    rows = [["embedded", "-", "-", embedded, 1.0, "-", "-", "-"]]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(make_repository(Path(tmp), model))
        try:
            for shm in ("off", "system"):
                for inflight in (1, 2, 4):
                    s = run("--server", server.config.grpc_url, "--metrics-url", server.config.metrics_url,
                            "--shm", shm, "--inflight", str(inflight))
                    m = s["server"]
                    rows.append(["triton", "grpc payload" if shm == "off" else "system shm", inflight,
                                 s["totals"]["fps"], s["totals"]["fps"] / embedded, m["avg_batch_size"],
                                 m["queue_ms_per_request"], m["compute_ms_per_inference"]])
        finally:
            server.stop()
    headers = ["backend", "transport", "in flight", "frames/s", "ratio to embedded", "server avg batch",
               "queue ms/request", "compute ms/inference"]
    note = (f"\n\n{args.clips} clips x {args.frames} frames, 720p H.264 -> 384x640, client batch {BATCH}; "
            "Triton: nvidia-pytriton's tritonserver on CPU, python backend, 2 instances x 1 onnxruntime thread; "
            "embedded: 2 sessions x 1 thread.")
    write_result("triton", "Embedded vs local Triton (CPU)", table(headers, rows) + note)


if __name__ == "__main__":
    main()
