"""What ``benchmarks.versus`` runs inside another project's virtual environment, never framestream's.

    PEER_PYTHON benchmarks/versus_peer.py ultralytics MODEL CLIP IMGSZ
    PEER_PYTHON benchmarks/versus_peer.py ort-providers MODEL SECONDS H W

Imports nothing of framestream (the peer's environment does not have it); prints one JSON line.
``ultralytics``: ``YOLO(MODEL).predict`` streamed over the clip, every frame, as its users run it.
``ort-providers``: bare onnxruntime on a contract model, the CPU provider (framestream's
layout: one 1-thread session per core, each fed batches of 8 from its own thread) against
the OpenVINO provider (one session, its own threading), alternating.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

BATCH = 8


def ultralytics_predict(model: str, clip: str, imgsz: int) -> dict:
    from ultralytics import YOLO

    yolo = YOLO(model, task="detect")
    frames, boxes, start = 0, 0, time.perf_counter()
    for result in yolo.predict(source=clip, imgsz=imgsz, stream=True, verbose=False, device="cpu"):
        frames += 1
        boxes += len(result.boxes)
    return {"frames": frames, "boxes": boxes, "seconds": time.perf_counter() - start}


def _throughput(sessions: list, batch, seconds: float) -> float:
    for s in sessions:
        s.run(None, {"images": batch})  # warm-up
    done = [0] * len(sessions)
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            sessions[i].run(None, {"images": batch})
            done[i] += len(batch)

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def ort_providers(model: str, seconds: float, hw: tuple[int, int]) -> dict:
    import numpy as np
    import onnxruntime as ort

    batch = np.full((BATCH, *hw, 3), 114, np.uint8)
    one_thread = ort.SessionOptions()
    one_thread.intra_op_num_threads = 1
    cpu = [ort.InferenceSession(model, one_thread, providers=["CPUExecutionProvider"])
           for _ in range(len(os.sched_getaffinity(0)))]
    out: dict = {"onnxruntime": ort.__version__, "cpu": [], "openvino": []}
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        out["openvino_skipped"] = f"onnxruntime {ort.__version__} here has no OpenVINOExecutionProvider"
        out["cpu"].append(_throughput(cpu, batch, seconds))
        return out
    ov = [ort.InferenceSession(model, providers=[("OpenVINOExecutionProvider", {"device_type": "CPU"})])]
    for _ in range(2):  # alternating, so a busy moment of the machine hits both
        out["cpu"].append(_throughput(cpu, batch, seconds))
        out["openvino"].append(_throughput(ov, batch, seconds))
    return out


def main(argv: list[str]) -> None:
    if argv[0] == "ultralytics":
        result = ultralytics_predict(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "ort-providers":
        result = ort_providers(argv[1], float(argv[2]), (int(argv[3]), int(argv[4])))
    else:
        raise SystemExit(f"unknown peer command {argv[0]!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
