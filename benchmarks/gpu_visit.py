"""The GPU visit's measurements, one stage a call, each writing its rows as they come.

    python -m benchmarks.gpu_visit STAGE --out DIR [--cpu] [sizes]

Stages (benchmarks/gpu_visit.sh runs them under their own time limits):
  bare      onnxruntime's CUDA provider: where onnxruntime came from, that the model's gpu
            code path (model_repository/yolo/1/model.py) starts it and whether every node
            stays on CUDA, its boxes against the CPU provider's on the same letterboxed 1080p
            frames, then the bare model swept over sessions x batch (I/O binding, inputs
            already on the device; steady frames/s after warm-up).
  nvdec     NVDEC alone at 1/4/7/8/14 sessions started together after a barrier, with the
            engine count PyNvVideoCodec reports and nvidia-smi dmon's dec%.
  e2e       1080p H.264 High profile (CABAC, deblocking) clips, extended by repetition to
            --e2e-frames per row, through the real client (NVDEC, CUDA letterbox) into the
            local Triton serving configs/gpu.pbtxt over CUDA shared memory at 2/4/8/16 in
            flight: wall and steady frames/s, Triton's batch and compute figures, the
            client's CPU seconds a frame, dmon's sm% and dec%; boxes against the embedded
            CPU run on one clip.
  embedded  the embedded GPU run against bare onnxruntime-gpu at the same sessions and batch.

Each row is appended to DIR/STAGE.md (a markdown table) the moment it is measured, so a
stage stopped by its limit keeps what it had. ``--cpu`` is the dry run for a machine without
a GPU: tiny sizes, the CPU provider, the client's CPU path, system shared memory and the cpu
config; it exercises every step that does not need a GPU and says which rows it stood in for.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import WORK, ensure_model, loop_clip, machine, output_boxes

CONF = 0.03  # the untrained model's score threshold: about 100 boxes a frame to compare
HW = (384, 640)  # 1080p letterboxed for a 640 model (minimal)
MODEL_PY = Path(__file__).resolve().parents[1] / "model_repository" / "yolo" / "1" / "model.py"


# -- rows ------------------------------------------------------------------------------------
class Rows:
    """A markdown table at DIR/NAME.md, rewritten after every row."""

    def __init__(self, out: Path, name: str, title: str, headers: list[str], note: str) -> None:
        if "--cpu" in sys.argv:
            note = ("DRY RUN (--cpu): CPU stand-ins for the GPU parts at tiny sizes; it shows the stage runs, "
                    "its figures measure nothing. " + note)
        self.path = out / f"{name}.md"
        self.title, self.headers, self.note, self.rows = title, headers, note, []
        out.mkdir(parents=True, exist_ok=True)
        self._write()

    def add(self, *row: object) -> None:
        self.rows.append([f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
        print(" | ".join(self.rows[-1]), flush=True)
        self._write()

    def _write(self) -> None:
        lines = [f"# {self.title}", "", f"{time.strftime('%Y-%m-%d %H:%M')}; {device_name()}; host {machine()}", "",
                 f"Command: `python -m benchmarks.gpu_visit {' '.join(sys.argv[1:])}`", "", self.note, "",
                 "| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        self.path.write_text("\n".join(lines) + "\n")


def logs(args: argparse.Namespace) -> Path:
    """DIR/logs: each run's log and dmon samples (the visit packs them into one file: a device
    call brings back 8 files at most)."""
    folder = args.out / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return f"GPU {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else "no GPU"
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"


@contextmanager
def dmon(log: Path):
    """nvidia-smi dmon (sm%, mem%, enc%, dec% each second) into ``log`` while the block runs;
    yields a function giving the means of sm% and dec% over the samples (None without a GPU)."""
    proc = None
    if shutil.which("nvidia-smi"):
        proc = subprocess.Popen(["nvidia-smi", "dmon", "-s", "u", "-d", "1"], stdout=open(log, "w"),
                                stderr=subprocess.STDOUT)
    means: dict[str, float | None] = {"sm": None, "dec": None}
    try:
        yield means
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            means.update(dmon_means(log.read_text()))


def dmon_means(text: str) -> dict[str, float | None]:
    """Mean sm% and dec% of ``nvidia-smi dmon -s u`` output (a header names the columns)."""
    columns: list[str] = []
    samples: dict[str, list[float]] = {"sm": [], "dec": []}
    for line in text.splitlines():
        if line.startswith("# gpu") or line.startswith("#gpu"):
            columns = line.lstrip("#").split()
        elif columns and not line.startswith("#"):
            fields = line.split()
            for key in samples:
                if key in columns and len(fields) == len(columns) and fields[columns.index(key)] != "-":
                    samples[key].append(float(fields[columns.index(key)]))
    return {k: (sum(v) / len(v) if v else None) for k, v in samples.items()}


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


# -- the model's own gpu code path, outside Triton --------------------------------------------------
def model_code() -> types.ModuleType:
    """model.py, importable here: triton_python_backend_utils is a stand-in (only gpu_session is used)."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("framestream_yolo_model", MODEL_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def structured_frames(count: int, hw: tuple[int, int] = HW) -> np.ndarray:
    """Coloured 24-pixel blocks shifted per frame, as the test clips draw them: inputs the
    untrained model answers with boxes. Step 1 carries no PyAV, so no video is decoded here."""
    rng = np.random.default_rng(1234)
    h, w = hw
    blocks = np.kron(rng.integers(0, 255, (h // 24 + 3, w // 24 + 3, 3)), np.ones((24, 24, 1))).astype(np.uint8)
    return np.stack([blocks[2 * i % 24:2 * i % 24 + h, 3 * i % 24:3 * i % 24 + w] for i in range(count)])


def stage_bare(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    from server_config.model.agreement import agreement

    model = ensure_model(640, conf=CONF)
    rows = Rows(args.out, "bare", "Bare onnxruntime: the CUDA provider, its agreement with the CPU one, the sweep",
                ["measure", "sessions", "batch", "value", "note"],
                f"onnxruntime {ort.__version__} from {ort.__file__}; providers {ort.get_available_providers()}. "
                f"Model: untrained YOLOv8n at 640, NMS inside, score threshold {CONF}; input {HW[0]}x{HW[1]} uint8.")
    code = model_code()
    started = time.perf_counter()
    if args.cpu:
        session_for = lambda: ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])  # noqa: E731
        rows.add("CUDA provider starts (model.py's gpu_session)", "-", "-", "dry run", "--cpu: the CPU provider stands in")
        where = "cpu"
    else:
        t0 = time.perf_counter()
        try:
            code.gpu_session(model, 0, {"cpu_nodes": "refuse"})
            rows.add("every node on CUDA (cpu_nodes refuse)", 1, "-", "yes", "session.disable_cpu_ep_fallback=1 loads")
        except code.GpuUnavailableError as e:
            rows.add("every node on CUDA (cpu_nodes refuse)", 1, "-", "no", str(e)[:200])
        try:
            session = code.gpu_session(model, 0, {})
        except code.GpuUnavailableError as e:  # the rest of the stage needs it: say why and stop
            rows.add("CUDA provider starts (model.py's gpu_session)", 1, "-", "no", str(e)[:300])
            return
        rows.add("CUDA provider starts (model.py's gpu_session)", 1, "-", "yes",
                 f"{session.get_providers()}; two sessions made in {time.perf_counter() - t0:.1f} s")
        session_for = lambda: code.gpu_session(model, 0, {})  # noqa: E731
        where = "cuda"
    batch = structured_frames(args.agree_frames)
    cpu = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref_det, ref_num = cpu.run(None, {"images": batch})
    det, num = session_for().run(None, {"images": batch})
    boxes = lambda d, n: [d[i, : int(n[i, 0])] for i in range(len(d))]  # noqa: E731
    a = agreement(boxes(ref_det, ref_num), boxes(det, num))
    rows.add(f"boxes F1 vs the CPU provider ({len(batch)} structured {HW[0]}x{HW[1]} frames)", 1, len(batch), f"{a.f1:.3f}",
             f"{a.matched}/{a.reference_boxes} matched")
    for sessions in args.sessions:
        for b in args.batches:
            rate = bare_rate([session_for() for _ in range(sessions)], b, where, args.seconds)
            rows.add("bare model, steady frames/s", sessions, b, rate, f"{args.seconds:g} s after warm-up, I/O binding")
    rows.add("stage time", "-", "-", f"{time.perf_counter() - started:.0f} s", "")


def bare_rate(sessions: list, batch: int, where: str, seconds: float, warmup: int = 5) -> float:
    """Frames/s of ``sessions`` each in its own thread, each running its own device input
    through I/O binding; counted from the moment all have warmed up."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    counts = [0] * len(sessions)
    ready = threading.Barrier(len(sessions) + 1)
    stop = threading.Event()

    def work(i: int) -> None:
        s = sessions[i]
        x = ort.OrtValue.ortvalue_from_numpy(rng.integers(0, 255, (batch, *HW, 3), dtype=np.uint8), where, 0)
        binding = s.io_binding()
        binding.bind_ortvalue_input("images", x)
        for name in ("detections", "num_detections"):
            binding.bind_output(name, where)
        for _ in range(warmup):
            s.run_with_iobinding(binding)
        ready.wait()
        while not stop.is_set():
            s.run_with_iobinding(binding)
            counts[i] += batch

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()  # the runs under way finish and count: the time runs to the last one's end
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


# -- clips -----------------------------------------------------------------------------------------
def make_high_profile_clip(folder: Path, *, frames: int, size_wh: tuple[int, int], preset: str = "medium") -> Path:
    """An H.264 clip from x264 ``preset`` (High profile: CABAC and deblocking), B-frames, whole
    GOPs; checked from the encoder's own settings string in the stream."""
    from tests.videos import write_video

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"high_{size_wh[0]}x{size_wh[1]}_{frames}f_{preset}.mp4"
    if not path.exists():
        tmp = path.with_name(f".{path.stem}.tmp.mp4")
        write_video(tmp, frames=frames, size_wh=size_wh, fps=30, gop=30, bframes=2, preset=preset)
        tmp.rename(path)
    settings = x264_settings(path)
    if "cabac=1" not in settings or "deblock=1" not in settings:
        raise RuntimeError(f"{path.name}: x264 wrote {settings[:120]!r}, not CABAC with deblocking")
    return path


def x264_settings(path: Path) -> str:
    """The options string x264 writes into its first SEI ("x264 - core ... cabac=1 ...")."""
    import av

    with av.open(str(path)) as f:
        for packet in f.demux(f.streams.video[0]):
            data = bytes(packet)
            at = data.find(b"x264 - core")
            if at >= 0:
                return data[at:data.find(b"\0", at)].decode(errors="replace")
            break
    return ""


def long_clips(folder: Path, base: Path, *, files: int, frames_each: int) -> Path:
    """``files`` copies of ``base`` extended by repetition (packets remuxed, not re-encoded) to
    ``frames_each`` frames, a whole number of ``base``: every copy ends at the end of a GOP."""
    import av

    with av.open(str(base)) as f:
        n = sum(1 for p in f.demux(f.streams.video[0]) if p.size)
    frames_each = max(n, frames_each // n * n)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        loop_clip(base, folder / f"long{i:02d}_{frames_each}f.mp4", frames_each)
    return folder


# -- the real client, observed -----------------------------------------------------------------------
@dataclass(frozen=True)
class ClientRun:
    summary: dict
    wall_fps: float
    steady_fps: float | None
    cpu_s_per_frame: float
    sm: float | None
    dec: float | None


def _frames_metric(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("framestream_frames_total"):
                    return float(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def steady_rate(samples: list[tuple[float, float]], total: float) -> float | None:
    """Frames/s between the samples at 10% and at 90% of the run's frames: warm-up (sessions,
    compilation, the first batches) and the drain at the end left out."""
    inside = [(t, f) for t, f in samples if 0.1 * total <= f <= 0.9 * total]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t1, f1), (t2, f2) = inside[0], inside[-1]
    return (f2 - f1) / (t2 - t1)


def run_client(src: Path, out: Path, model: Path, flags: list[str], log: Path) -> ClientRun:
    """``python -m client.bulk`` as a child: its metrics polled every 0.2 s, its CPU time from wait4."""
    from tests.triton_server import free_ports

    (port,) = free_ports(1)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "client.bulk", str(src), "--out", str(out), "--model", str(model), "--overwrite",
           "--no-progress", "--metrics-port", str(port), *flags]
    samples: list[tuple[float, float]] = []
    with dmon(log.with_suffix(".dmon")) as gpu, open(log, "w") as logfile:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)
        while True:  # reaped by wait4, not Popen, for the child's own CPU time
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            f = _frames_metric(port)
            if f is not None:
                samples.append((time.perf_counter() - start, f))
            time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"client.bulk exited {proc.returncode}; log: {log}")
    summary = json.loads((out / "summary.json").read_text())
    frames = summary["totals"]["frames"]
    cpu = usage.ru_utime + usage.ru_stime
    return ClientRun(summary, summary["totals"]["fps"], steady_rate(samples, frames), cpu / max(frames, 1),
                     gpu["sm"], gpu["dec"])


# -- stages -------------------------------------------------------------------------------------------
def stage_e2e(args: argparse.Namespace) -> None:
    from server_config.local import LocalServerConfig, LocalTriton
    from tests.triton_server import free_ports, make_repository

    model = ensure_model(640, conf=CONF)
    base = make_high_profile_clip(WORK / "visit_clips", frames=args.base_frames, size_wh=args.size)
    src = long_clips(WORK / f"visit_long_{args.files}x{args.e2e_frames // args.files}", base, files=args.files,
                     frames_each=args.e2e_frames // args.files)
    config = "cpu" if args.cpu else "gpu"
    shm, device = ("system", "cpu") if args.cpu else ("cuda", "gpu")
    rows = Rows(args.out, "e2e", "End to end: the real client into Triton",
                ["in flight", "frames", "wall frames/s", "steady frames/s", "server avg batch", "compute ms/inference",
                 "client CPU ms/frame", "sm %", "dec %", "boxes F1 vs embedded CPU"],
                f"{args.files} files x {args.e2e_frames // args.files} frames of {args.size[0]}x{args.size[1]} H.264 High profile (x264 medium, "
                f"CABAC, deblocking, B-frames; {base.name} repeated by remux); client --device {device} --shm {shm} "
                f"--batch {args.batch}; Triton: nvidia-pytriton's tritonserver, python backend, configs/{config}.pbtxt "
                f"(the stand-in for the NGC image's onnxruntime backend), {args.instances} instances. Steady: frames/s "
                f"between 10% and 90% of the frames (client metrics every 0.2 s).")
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repository(Path(tmp), model)
        shutil.copy(MODEL_PY.parents[1] / "configs" / "gpu.pbtxt", repo / "yolo" / "configs" / "gpu.pbtxt")
        shutil.rmtree(repo / "other")
        grpc, http, metrics = free_ports(3)
        server = LocalTriton(LocalServerConfig(model_repository=repo, grpc_port=grpc, http_port=http,
                                               metrics_port=metrics, instances=args.instances, config_name=config,
                                               startup_timeout_s=240))
        t0 = time.perf_counter()
        server.start()
        print(f"Triton ({config}) ready in {time.perf_counter() - t0:.1f} s", flush=True)
        try:
            common = ["--server", server.config.grpc_url, "--metrics-url", server.config.metrics_url, "--shm", shm,
                      "--device", device, "--batch", str(args.batch)]
            agree = "-"
            for inflight in args.inflight:
                run = run_client(src, WORK / "visit_out", model, [*common, "--inflight", str(inflight)],
                                 logs(args) / f"e2e_inflight{inflight}.log")
                if inflight == args.agree_at:
                    agree = agreement_on_one_clip(base, model, common + ["--inflight", str(inflight)])
                m = run.summary.get("server") or {}
                rows.add(inflight, run.summary["totals"]["frames"], run.wall_fps, run.steady_fps or "n/a",
                         m.get("avg_batch_size", "n/a"), m.get("compute_ms_per_inference", "n/a"),
                         1000 * run.cpu_s_per_frame, fmt(run.sm), fmt(run.dec), agree if inflight == args.agree_at else "-")
        finally:
            server.stop()


def agreement_on_one_clip(clip: Path, model: Path, flags: list[str]) -> str:
    from benchmarks.common import bulk_summary
    from benchmarks.triton import agreement_with

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "one"
        src.mkdir()
        shutil.copy(clip, src / clip.name)
        bulk_summary(src, model, "--device", "cpu", "--batch", "8", out=Path(tmp) / "embedded")
        reference = output_boxes(Path(tmp) / "embedded")
        bulk_summary(src, model, *flags, out=Path(tmp) / "served")
        return agreement_with(reference, Path(tmp) / "served")


def stage_nvdec(args: argparse.Namespace) -> None:
    rows = Rows(args.out, "nvdec", "NVDEC sessions started together",
                ["sessions", "frames", "aggregate frames/s", "per session", "dec %", "note"],
                f"each session decodes its own copy of a {args.nvdec_frames}-frame {args.size[0]}x{args.size[1]} H.264 "
                "High-profile clip "
                "(B-frames), frames on the device; timed from a barrier all sessions pass to the last one's end.")
    try:
        import PyNvVideoCodec as nvc
    except Exception as e:  # ImportError, or RuntimeError where the driver is missing
        rows.add("-", "-", "-", "-", "-", f"no NVDEC here ({type(e).__name__}); the dry run stops")
        return
    from client.gpu.engines import decoder_engines

    base = make_high_profile_clip(WORK / "visit_clips", frames=args.base_frames, size_wh=args.size)
    (clip,) = long_clips(WORK / f"visit_nvdec_{args.nvdec_frames}", base, files=1,
                         frames_each=args.nvdec_frames).glob("*.mp4")
    engines = decoder_engines()
    for sessions in args.nvdec_sessions:
        barrier = threading.Barrier(sessions + 1)
        counts = [0] * sessions
        ends = [0.0] * sessions

        def work(i: int, barrier=barrier, counts=counts, ends=ends) -> None:
            demuxer = nvc.CreateDemuxer(filename=str(clip))
            decoder = nvc.CreateDecoder(gpuid=0, codec=demuxer.GetNvCodecId(), usedevicememory=True)
            barrier.wait()
            for packet in demuxer:
                counts[i] += len(decoder.Decode(packet))
            ends[i] = time.perf_counter()

        with dmon(logs(args) / f"nvdec_{sessions}.dmon") as gpu:
            threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
            for t in threads:
                t.start()
            barrier.wait()
            start = time.perf_counter()
            for t in threads:
                t.join()
        rate = sum(counts) / (max(ends) - start)
        rows.add(sessions, sum(counts), rate, rate / sessions, fmt(gpu["dec"]), f"engines reported: {engines}")


def stage_embedded(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    model = ensure_model(640, conf=CONF)
    base = make_high_profile_clip(WORK / "visit_clips", frames=args.base_frames, size_wh=args.size)
    src = long_clips(WORK / f"visit_long_{args.files}x{args.e2e_frames // args.files}", base, files=args.files,
                     frames_each=args.e2e_frames // args.files)
    device = "cpu" if args.cpu else "gpu"
    rows = Rows(args.out, "embedded", "Embedded run against the bare model, same sessions and batch",
                ["sessions", "batch", "run wall frames/s", "run steady frames/s", "bare frames/s", "steady / bare",
                 "client CPU ms/frame", "sm %", "dec %"],
                f"client --device {device} embedded; bare: the same number of onnxruntime sessions on "
                f"{'the CPU' if args.cpu else 'CUDA'}, same batch, {HW[0]}x{HW[1]} inputs on the device (goal >= 0.9).")
    code = model_code()
    for sessions in args.embedded_sessions:
        run = run_client(src, WORK / "visit_out_embedded", model,
                         ["--device", device, "--batch", str(args.batch), "--sessions", str(sessions)],
                         logs(args) / f"embedded_{sessions}.log")
        made = [ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]) if args.cpu
                else code.gpu_session(model, 0, {}) for _ in range(sessions)]
        bare = bare_rate(made, args.batch, "cpu" if args.cpu else "cuda", args.seconds)
        steady = run.steady_fps
        rows.add(sessions, args.batch, run.wall_fps, steady or "n/a", bare, (steady / bare) if steady else "n/a",
                 1000 * run.cpu_s_per_frame, fmt(run.sm), fmt(run.dec))


STAGES = {"bare": stage_bare, "nvdec": stage_nvdec, "e2e": stage_e2e, "embedded": stage_embedded}


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=list(STAGES))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cpu", action="store_true", help="dry run without a GPU: tiny sizes, CPU stand-ins")
    p.add_argument("--sessions", type=ints, default=[1, 2, 4], help="bare sweep: sessions")
    p.add_argument("--batches", type=ints, default=[1, 8, 16, 32], help="bare sweep: batch sizes")
    p.add_argument("--seconds", type=float, default=2.0, help="bare: timed seconds per point")
    p.add_argument("--agree-frames", type=int, default=16)
    p.add_argument("--base-frames", type=int, default=300, help="the encoded clip, repeated to make long ones")
    p.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1920, 1080))
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--e2e-frames", type=int, default=16_800, help="frames per end-to-end row, all files")
    p.add_argument("--inflight", type=ints, default=[2, 4, 8, 16])
    p.add_argument("--agree-at", type=int, default=8, help="in flight of the row whose boxes are compared")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--nvdec-frames", type=int, default=1200)
    p.add_argument("--nvdec-sessions", type=ints, default=[1, 4, 7, 8, 14])
    p.add_argument("--embedded-sessions", type=ints, default=[2])
    args = p.parse_args(argv)
    STAGES[args.stage](args)


if __name__ == "__main__":
    main()
