"""GPU measurements for benchmarks/gpu_check.sh: NVDEC decoders, the CUDA letterbox, the NVDEC
source writing into batch slots, a long file whole against split at key frames, end to end.

    python -m benchmarks.gpu --out DIR [--clips 4] [--frames 150] [--long-frames 600]

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
    h, w = hw
    reference = letterbox_reference(nv12_to_rgb_reference(cp.asnumpy(nv12), w, h, colour), plan)
    with PyAVSource(clip) as src:
        cpu = next(src.frames(PLAN)).image
    vs_ref = float((np.abs(gpu.astype(int) - reference.astype(int)) <= 2).mean())
    vs_cpu = float((np.abs(gpu.astype(int) - cpu.astype(int)) <= 2).mean())
    return [
        [f"CUDA letterbox {w}x{h} -> {plan.dst_hw[1]}x{plan.dst_hw[0]}, frames/s", 1000 / per_frame_ms, "CUDA events, 2000 launches"],
        ["pixels within 2 levels of the NumPy reference (same NV12)", f"{vs_ref:.5f}", "goal >= 0.999"],
        ["pixels within 2 levels of the CPU path (PyAV)", f"{vs_cpu:.5f}", f"CPU letterbox: {resize_method()}"],
    ]


def source_fps(path: Path, frame_ranges: list, batch: int = 8) -> float:
    """Frames/s of NvdecSource jobs run concurrently (one thread each, as decode workers do),
    every frame letterboxed by the kernel into a slot of a per-thread batch buffer."""
    import cupy as cp

    from client.decode import Sampling
    from client.decode.nvdec_source import NvdecSource
    from client.gpu.letterbox import GpuLetterbox

    kernel = GpuLetterbox()
    counts = [0] * len(frame_ranges)

    def work(i: int) -> None:
        with NvdecSource(path, sampling=Sampling(), letterbox=kernel, frame_range=frame_ranges[i]) as src:
            buffer = None
            for frame in src.frames(PLAN):
                if buffer is None:
                    buffer = cp.empty((batch, *frame.plan.dst_hw, 3), cp.uint8)
                frame.picture.write_into(buffer[counts[i] % batch])
                counts[i] += 1
        cp.cuda.get_current_stream().synchronize()

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frame_ranges))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def split_rows(long_clip: Path, parts: int = 4) -> list[list[object]]:
    """The seed's long-file bound on the GPU path: one long file whole, then cut at key
    frames into ``parts`` segments decoded at once (as the scheduler does)."""
    from client.decode import FrameRange
    from client.decode.layout import read_layout

    layout = read_layout(long_clip)
    n = len(layout.pts)
    index_of_pts = {pts: i for i, pts in enumerate(layout.pts)}
    everything = frozenset(range(n))
    cuts = [0]
    for k in range(1, parts):  # the key frame nearest each 1/parts of the file
        cuts.append(min(layout.key_indices, key=lambda i: abs(i - k * n / parts)))
    bounds = sorted(set(cuts)) + [n]
    ranges = [FrameRange(a, b, layout.pts[a], everything, index_of_pts, expected=b - a) for a, b in zip(bounds, bounds[1:])]
    whole = source_fps(long_clip, [None])
    split = source_fps(long_clip, ranges)
    return [[f"NvdecSource + letterbox into slots, one {n}-frame file whole, frames/s", whole, "1 decoder"],
            [f"the same file as {len(ranges)} key-frame segments at once, frames/s", split,
             f"{len(ranges)} decoders; speedup {split / whole:.2f}x"]]


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


def attempt(what: str, measure) -> list[list[object]]:
    """One section's rows, or a row saying why it failed: a one-shot device run keeps the rest."""
    try:
        return measure()
    except Exception as e:  # reported in the table, with the traceback in the log
        import traceback

        traceback.print_exc()
        return [[what, "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--long-frames", type=int, default=600, help="frames of the long file split into segments")
    p.add_argument("--model", type=Path, default=None)
    args = p.parse_args()
    work = args.out / "work"
    clips_dir = work / "clips1080"
    t0 = time.perf_counter()
    clips = make_clips(clips_dir, count=args.clips, frames=args.frames, size_wh=(1920, 1080), gop=60)
    print(f"clips made in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = [[f"NVDEC decode, {n} concurrent decoder(s), frames/s", nvdec_fps(clips, n), "1080p H.264, B-frames"]
            for n in (1, 4, 8)]
    rows += attempt("CUDA letterbox", lambda: letterbox_rows(clips[0], (1080, 1920)))

    def slots() -> list[list[object]]:
        whole = source_fps(clips[0], [None])
        return [["NvdecSource + letterbox into batch slots, 1 decoder, frames/s", whole,
                 f"{whole / rows[0][1]:.2f} of bare NVDEC decode (row 1)"]]

    rows += attempt("NvdecSource into slots", slots)

    def split() -> list[list[object]]:
        (long_clip,) = make_clips(work / "long1080", count=1, frames=args.long_frames, size_wh=(1920, 1080), gop=30)
        return split_rows(long_clip)

    rows += attempt("long file split", split)
    if args.model is not None:
        rows += attempt("embedded GPU", lambda: embedded_rows(clips_dir, args.model))
    import cupy as cp

    gpu = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    text = (f"# GPU check\n\n{time.strftime('%Y-%m-%d %H:%M')}; {gpu}; host {machine()}\n\n"
            f"Command: `bash benchmarks/gpu_check.sh`\n\n{table(['measure', 'value', 'note'], rows)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
