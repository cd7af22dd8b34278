"""GPU measurements for benchmarks/gpu_check.sh: NVDEC decoders, the CUDA letterbox, end to end.

    python -m benchmarks.gpu --out DIR [--clips 8] [--frames 240]

Writes DIR/gpu_check.md (and prints it). Rows that need a part this machine lacks
(onnxruntime-gpu for the embedded GPU run) say so instead of a figure.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, make_clips, table
from client.colour import nv12_to_rgb_reference, select_colour
from client.letterbox import letterbox_reference, plan_letterbox

PLAN = lambda hw: plan_letterbox(hw, (640, 640), minimal=True)  # noqa: E731


def nvdec_fps(clips: list[Path], decoders: int) -> float:
    """Frames/s of ``decoders`` concurrent NVDEC sessions, each decoding whole clips."""
    import cupy as cp
    import PyNvVideoCodec as nvc

    counts = [0] * decoders

    def work(i: int) -> None:
        for clip in clips[i::decoders] if len(clips) >= decoders else [clips[i % len(clips)]]:
            demuxer = nvc.CreateDemuxer(filename=str(clip))
            decoder = nvc.CreateDecoder(gpuid=0, codec=demuxer.GetNvCodecId(), usedevicememory=True)
            for packet in demuxer:
                counts[i] += len(decoder.Decode(packet))
        cp.cuda.Device().synchronize()

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(decoders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def first_nv12(clip: Path):
    import PyNvVideoCodec as nvc

    from client.decode.nvdec_source import _surface_copy

    demuxer = nvc.CreateDemuxer(filename=str(clip))
    decoder = nvc.CreateDecoder(gpuid=0, codec=demuxer.GetNvCodecId(), usedevicememory=True)
    return _surface_copy(next(f for packet in demuxer for f in decoder.Decode(packet)))


def letterbox_rows(clip: Path, hw: tuple[int, int]) -> list[list[object]]:
    import cupy as cp

    from client.decode.pyav_source import PyAVSource, resize_method
    from client.gpu.letterbox import GpuLetterbox, nv12_planes

    nv12 = first_nv12(clip)
    plan = PLAN(hw)
    colour = select_colour(None, None)
    kernel = GpuLetterbox()
    out = cp.empty((*plan.dst_hw, 3), cp.uint8)
    luma, chroma = nv12_planes(nv12)
    for _ in range(10):
        kernel(luma, chroma, plan, colour, out)
    n = 2000
    begin, end = cp.cuda.Event(), cp.cuda.Event()
    begin.record()
    for _ in range(n):
        kernel(luma, chroma, plan, colour, out)
    end.record()
    end.synchronize()
    per_frame_ms = cp.cuda.get_elapsed_time(begin, end) / n
    gpu = cp.asnumpy(out)
    host = cp.asnumpy(nv12)
    h, w = hw
    surface_h = host.shape[0] * 2 // 3
    packed = np.concatenate([host[:h], host[surface_h : surface_h + h // 2]])
    reference = letterbox_reference(nv12_to_rgb_reference(packed, w, h, colour), plan)
    with PyAVSource(clip) as src:
        cpu = next(src.frames(PLAN)).image
    vs_ref = float((np.abs(gpu.astype(int) - reference.astype(int)) <= 2).mean())
    vs_cpu = float((np.abs(gpu.astype(int) - cpu.astype(int)) <= 2).mean())
    return [
        [f"CUDA letterbox {w}x{h} -> {plan.dst_hw[1]}x{plan.dst_hw[0]}, frames/s", 1000 / per_frame_ms, "CUDA events, 2000 launches"],
        ["pixels within 2 levels of the NumPy reference (same NV12)", f"{vs_ref:.5f}", "goal >= 0.999"],
        ["pixels within 2 levels of the CPU path (PyAV)", f"{vs_cpu:.5f}", f"CPU resize: {resize_method()}"],
    ]


def embedded_rows(clips_dir: Path, model: Path) -> list[list[object]]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [["embedded GPU end to end / bare GPU throughput", "n/a",
                 "onnxruntime-gpu is not installed on this machine (its wheels exceed what can be carried)"]]
    import json
    import subprocess
    import sys

    out = clips_dir.parent / "out_gpu"
    subprocess.run([sys.executable, "-m", "client.bulk", str(clips_dir), "--out", str(out), "--model", str(model),
                    "--device", "gpu", "--batch", "8", "--no-progress", "--overwrite"], check=True)
    e2e = json.loads((out / "summary.json").read_text())["totals"]["fps"]
    import cupy as cp

    from client.infer.embedded_gpu import EmbeddedGpuBackend

    backend = EmbeddedGpuBackend(model, sessions=1)
    batch = cp.full((8, 384, 640, 3), 114, cp.uint8)
    for _ in range(5):
        backend.infer(0, batch)
    start, n = time.perf_counter(), 50
    for _ in range(n):
        backend.infer(0, batch)
    bare = 8 * n / (time.perf_counter() - start)
    return [["embedded GPU end to end, frames/s", e2e, "1080p -> 384x640, batch 8"],
            ["bare onnxruntime-gpu, same batch and shape", bare, ""], ["ratio (goal >= 0.9)", e2e / bare, ""]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--model", type=Path, default=None)
    args = p.parse_args()
    work = args.out / "work"
    clips_dir = work / "clips1080"
    t0 = time.perf_counter()
    clips = make_clips(clips_dir, count=args.clips, frames=args.frames, size_wh=(1920, 1080), gop=60)
    print(f"clips made in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = [[f"NVDEC decode, {n} concurrent decoder(s), frames/s", nvdec_fps(clips, n), "1080p H.264, B-frames"]
            for n in (1, 4, 8)]
    rows += letterbox_rows(clips[0], (1080, 1920))
    if args.model is not None:
        rows += embedded_rows(clips_dir, args.model)
    import cupy as cp

    gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    text = (f"# GPU check\n\n{time.strftime('%Y-%m-%d %H:%M')}; {gpu}; host {machine()}\n\n"
            f"Command: `bash benchmarks/gpu_check.sh`\n\n{table(['measure', 'value', 'note'], rows)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
