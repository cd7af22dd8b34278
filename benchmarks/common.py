"""Shared by the benchmark scripts: test clips, the model, and markdown tables written to results/."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"  # generated clips and outputs (git-ignored)


def make_clips(folder: Path, *, count: int, frames: int, size_wh: tuple[int, int] = (1280, 720), gop: int = 48) -> list[Path]:
    """H.264 clips with moving structured content; reused when already there."""
    from tests.videos import write_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:02d}_{size_wh[0]}x{size_wh[1]}_{frames}f.mp4"
        if not path.exists():  # written under a temporary name: an interrupted run leaves no half clip
            tmp = path.with_name(f".{path.stem}.tmp.mp4")
            write_video(tmp, frames=frames, size_wh=size_wh, fps=30, gop=gop, bframes=2)
            tmp.rename(path)
        paths.append(path)
    return paths


def loop_clip(src: Path, dst: Path, frames: int) -> Path:
    """``frames`` frames of ``src`` over and over, copied, not re-encoded: a long file in the time
    of writing it. ``src`` must start with a key frame and have no B-frames (decode order is
    display order), so that the copy can end after any frame."""
    import av

    if dst.exists():
        return dst
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [(p, p.pts, p.dts) for p in inp.demux(stream) if p.size]
        span = max(pts + p.duration for p, pts, _ in packets) - min(pts for _, pts, _ in packets)
        for n in range(frames):
            packet, pts, dts = packets[n % len(packets)]
            loop = n // len(packets)
            packet.pts, packet.dts, packet.stream = pts + loop * span, dts + loop * span, copy
            out.mux(packet)
    tmp.rename(dst)
    return dst


def ensure_model(imgsz: int = 640, conf: float | None = None) -> Path:
    """The built (untrained) YOLOv8n; ``conf``: its score threshold instead of the default 0.25,
    at which the untrained model finds nothing on the generated clips."""
    from client.contract import NmsSettings
    from server_config.model.build import build_model
    from server_config.model.files import save_onnx_atomically

    path = WORK / (f"yolov8n_{imgsz}.onnx" if conf is None else f"yolov8n_{imgsz}_conf{conf:g}.onnx")
    if not path.exists():
        nms = NmsSettings() if conf is None else NmsSettings(conf_thres=conf)
        save_onnx_atomically(build_model(size="n", imgsz=imgsz, nms=nms), path)
    return path


def machine() -> str:
    import os

    cpu = "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(headers: list[str], rows: list[list[object]]) -> str:
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    module = Path(sys.argv[0]).resolve().relative_to(RESULTS.parent.parent).with_suffix("").as_posix().replace("/", ".")
    command = " ".join(["python -m", module, *sys.argv[1:]])
    text = f"# {title}\n\n{stamp}; {machine()}\n\nCommand: `{command}`\n\n{body}\n"
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    return path


def run_python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (own RSS, own threads); return its stdout."""
    return subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True).stdout


_BULK = (
    "import json,resource,sys;from client import bulk;rc=bulk.main(sys.argv[1:],signals=True);"
    "print(json.dumps({'rc':rc,'rss_mib':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024}))"
)


def bulk_summary(src: Path, model: Path, *flags: str, out: Path = WORK / "out") -> dict:
    """``python -m client.bulk`` in a fresh interpreter: its summary.json, plus its peak RSS.

    Every benchmark measures through this one function, so frames/s is always the run's own
    summary figure (frames inferred / wall seconds), never recomputed another way.
    """
    stdout = run_python(_BULK, str(src), "--out", str(out), "--model", str(model), "--overwrite", "--no-progress",
                        *flags)
    result = json.loads(stdout.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    if result["rc"] != 0:
        raise RuntimeError(f"client.bulk exited {result['rc']}: {summary['totals']}")
    summary["rss_mib"] = result["rss_mib"]
    return summary


def output_boxes(out: Path) -> dict[str, list]:
    """A run's detections: each output file (relative path) -> one (N, 6) array per frame line."""
    import numpy as np

    return {p.relative_to(out).as_posix(): [np.array(json.loads(l)["detections"], np.float32).reshape(-1, 6)
                                            for l in p.read_text().splitlines()]
            for p in sorted(out.rglob("*.jsonl"))}


def clip_parser(description: str, *, clips: int, frames: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--clips", type=int, default=clips, help="720p H.264 clips to generate")
    p.add_argument("--frames", type=int, default=frames, help="frames per clip")
    return p


def clips_720p(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    folder = WORK / f"clips720_{args.clips}x{args.frames}"
    return folder, make_clips(folder, count=args.clips, frames=args.frames)
