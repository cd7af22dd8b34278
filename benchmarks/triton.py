"""Embedded vs Triton (gRPC payload, system or CUDA shared memory) at several requests in flight.

    python -m benchmarks.triton [--clips 4] [--frames 30] [--transports off,system] [--inflight 1,2,4]
                                [--device cpu|gpu] [--instances N] [--name triton]

One run, same clips, same 640 model: frames/s, the ratio to embedded, what Triton's metrics
say (average server batch size, queue and compute time), and whether the outputs are the
embedded CPU run's (F1 of their boxes at IoU 0.5: 1.000 when every box is found again; the
GPU letterbox rounds a few pixels differently from the CPU one). With ``--transports cuda``
it also reads the server's CUDA shared-memory status while each run goes and after it ends:
the client's regions must be registered during the run and none left after. Written to
benchmarks/results/NAME.md. On a GPU machine: ``--device gpu --transports off,system,cuda``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from benchmarks.common import (WORK, bulk_summary, clip_parser, clips_720p, ensure_model, output_boxes, table,
                               write_result)
from tests.triton_server import make_repository, start_server

BATCH = 8
CONF = 0.03  # the untrained model's score threshold: about 100 boxes a frame to compare (none at 0.25)
TRANSPORT = {"off": "grpc payload", "system": "system shm", "cuda": "CUDA shm"}


class CudaRegionWatch:
    """Polls the server's CUDA shared-memory status in a thread: the most regions seen at once."""

    def __init__(self, url: str) -> None:
        import tritonclient.grpc as grpcclient

        self._client = grpcclient.InferenceServerClient(url)
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def regions(self) -> int:
        return len(self._client.get_cuda_shared_memory_status().regions)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.most = max(self.most, self.regions())

    def __enter__(self) -> "CudaRegionWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def served_as(url: str) -> str:
    """How the served model runs, from the config Triton itself serves: instances x threads."""
    import tritonclient.grpc as grpcclient

    from client.contract import MODEL_NAME

    config = grpcclient.InferenceServerClient(url).get_model_config(MODEL_NAME, as_json=True)["config"]
    instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", []))
    threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "?")
    return f"{instances} instances x {threads} thread(s)"


def agreement_with(reference: dict, out: Path) -> str:
    from server_config.model.agreement import agreement

    boxes = output_boxes(out)
    if sorted(boxes) != sorted(reference):
        return f"outputs differ: {sorted(set(boxes) ^ set(reference))}"
    if not any(len(f) for frames in reference.values() for f in frames):
        return "no boxes to compare"
    a = agreement([f for k in sorted(reference) for f in reference[k]], [f for k in sorted(boxes) for f in boxes[k]])
    return f"{a.f1:.3f} ({a.matched}/{a.reference_boxes})"


def main() -> None:
    p = clip_parser(__doc__.splitlines()[0], clips=4, frames=30)
    p.add_argument("--transports", default="off,system", help="of off, system, cuda")
    p.add_argument("--inflight", default="1,2,4")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="the client's decode and letterbox")
    p.add_argument("--instances", type=int, default=None, help="server instances (default: configs/cpu.pbtxt's 2)")
    p.add_argument("--name", default="triton", help="results file name")
    args = p.parse_args()
    model = ensure_model(640, conf=CONF)
    src, _ = clips_720p(args)
    out = WORK / "out_triton"

    def run(*flags: str) -> dict:
        shutil.rmtree(out, ignore_errors=True)  # only this run's outputs are compared
        return bulk_summary(src, model, "--batch", str(BATCH), *flags, out=out)

    embedded = run("--device", "cpu")["totals"]["fps"]
    reference = output_boxes(out)
    rows = [["embedded (CPU)", "-", "-", embedded, 1.0, "-", "-", "-", "1.000 (reference)", "-"]]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(make_repository(Path(tmp), model), instances=args.instances)
        try:
            served = served_as(server.config.grpc_url)
            for shm in args.transports.split(","):
                for inflight in (int(k) for k in args.inflight.split(",")):
                    flags = ["--server", server.config.grpc_url, "--metrics-url", server.config.metrics_url,
                             "--shm", shm, "--inflight", str(inflight), "--device", args.device]
                    regions = "-"
                    if shm == "cuda":
                        with CudaRegionWatch(server.config.grpc_url) as watch:
                            s = run(*flags)
                        regions = f"{watch.most} / {watch.regions()}"
                    else:
                        s = run(*flags)
                    m = s["server"]
                    rows.append([f"triton ({args.device} client)", TRANSPORT[shm], inflight, s["totals"]["fps"],
                                 s["totals"]["fps"] / embedded, m["avg_batch_size"], m["queue_ms_per_request"],
                                 m["compute_ms_per_inference"], agreement_with(reference, out), regions])
                    print(rows[-1], flush=True)
        finally:
            server.stop()
    headers = ["backend", "transport", "in flight", "frames/s", "ratio to embedded", "server avg batch",
               "queue ms/request", "compute ms/inference", "boxes F1 vs embedded CPU (matched/all)",
               "CUDA regions during / after"]
    note = (f"\n\n{args.clips} clips x {args.frames} frames, 720p H.264 -> 384x640, client batch {BATCH}; "
            f"client decode and letterbox on the {args.device.upper()}; Triton: nvidia-pytriton's tritonserver, "
            f"python backend running onnxruntime on the CPU, {served}; embedded: "
            f"onnxruntime on the CPU ({os.cpu_count()} cores), the thread budget's sessions.")
    write_result(args.name, f"Embedded vs local Triton ({args.device.upper()} client)", table(headers, rows) + note)


if __name__ == "__main__":
    main()
