"""Can the Python side keep up with a GPU? The client's own cost, with inference and decoding taken out.

    python -m benchmarks.client_overhead [--videos 8] [--frames 2500] [--detections 20] [--rounds 3]

A backend that answers instantly (``N`` detections a frame) is fed pre-decoded frames through
the real pipeline (queues, batcher, lanes, events), the real collector (reorder, progress)
and the real writers; each measure alternates with the others, ``--rounds`` times:

- pipeline alone: frames through decode workers -> batcher -> lanes -> events, pictures
  already in their slot (as NVDEC + the CUDA letterbox leave them), and again with each
  384x640 frame copied into its host slot (the CPU path's one copy);
- writer alone: ``FileWriter.write`` of frames with ``N`` detections, JSONL and Parquet;
- end to end: pipeline + collector + JSONL writer, files completed and recorded.

Goals (issue 16): pipeline >= 5,000 frames/s, JSONL writer >= 20,000 frames/s at 20
detections a frame, Parquet more; batches stay full (their size distribution is reported).
Writes results/client_overhead.md. ``--profile`` prints a cProfile of each measure instead.
"""

from __future__ import annotations

import argparse
import os
import collections
import cProfile
import pstats
import resource
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from benchmarks.common import table, write_result
from client.collector import Collector
from client.contract import DETECTIONS, ModelInfo
from client.decode import DecodedFrame, Letterboxed, PlanFor
from client.detections import Detections
from client.discovery import Candidate
from client.infer import BatchOutput
from client.infer.buffers import LaneBuffers, host
from client.letterbox import plan_letterbox
from client.pipeline import FrameResult, Job, Pipeline, PipelineConfig
from client.progress import Progress
from client.resume import ResumeLedger
from client.schedule import FilePlan
from client.sinks import JsonlSink, ParquetSink

SRC_HW, MODEL_HW = (720, 1280), (640, 640)
PLAN = plan_letterbox(SRC_HW, MODEL_HW, minimal=True)  # 384x640
BATCH = 8
LANES = 2


class InstantBackend:
    """The Backend protocol, answering at once: ``per_frame`` detections for every image, and
    a record of every batch's size."""

    def __init__(self, per_frame: int, *, lanes: int = LANES) -> None:
        self.model = ModelInfo(imgsz=MODEL_HW, dynamic_hw=True, max_batch=None, source="instant", digest="instant")
        self.lanes = lanes
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self._lock = threading.Lock()
        self._buffers = LaneBuffers(lanes, host)
        rng = np.random.default_rng(0)
        max_det = DETECTIONS.dims[0]
        det = np.zeros((BATCH, max_det, 6), np.float32)
        xy = rng.uniform(0, 600, (BATCH, per_frame, 2))
        wh = rng.uniform(4, 200, (BATCH, per_frame, 2))
        det[:, :per_frame, :4] = np.concatenate([xy, xy + wh], axis=-1)
        det[:, :per_frame, 4] = rng.uniform(0.25, 1, (BATCH, per_frame))
        det[:, :per_frame, 5] = rng.integers(0, 80, (BATCH, per_frame))
        self._out = BatchOutput(det, np.full((BATCH, 1), per_frame, np.int32))

    def batch_buffer(self, lane: int, shape: tuple[int, int, int, int]):
        return self._buffers.view(lane, shape)

    def infer(self, lane: int, batch: np.ndarray) -> BatchOutput:
        n = len(batch)
        with self._lock:
            self.batch_sizes[n] += 1
        return BatchOutput(self._out.detections[:n], self._out.num_detections[:n])

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def busy_seconds(self) -> float:
        return 0.0


@dataclass(frozen=True)
class InPlace:
    """A picture that is already in its batch slot (NVDEC + the CUDA letterbox write it there)."""

    image: np.ndarray

    def write_into(self, out) -> None:
        pass

    def array(self):
        return self.image


class PreDecoded:
    """A FrameSource of ``frames`` identical pre-letterboxed frames: decoding costs nothing."""

    def __init__(self, path: Path, frames: int, picture) -> None:
        self.path, self._frames, self._picture = path, frames, picture

    def frames(self, plan_for: PlanFor) -> Iterator[DecodedFrame]:
        plan = plan_for(SRC_HW)
        for i in range(self._frames):
            yield DecodedFrame(i, i / 30, self._picture, plan)

    def close(self) -> None:
        pass

    def __enter__(self) -> "PreDecoded":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def jobs(paths: list[Path], frames: int, picture) -> list[Job]:
    return [Job(i, lambda p=p: PreDecoded(p, frames, picture)) for i, p in enumerate(paths)]


def pipeline_alone(paths: list[Path], frames: int, picture, per_frame: int) -> tuple[int, collections.Counter]:
    backend = InstantBackend(per_frame)
    pipeline = Pipeline(backend, PipelineConfig(batch=BATCH, workers=2))
    n = sum(isinstance(e, FrameResult) for e in pipeline.run(jobs(paths, frames, picture)))
    return n, backend.batch_sizes


def detections(per_frame: int, count: int = 64) -> list[Detections]:
    """Frames of ``per_frame`` detections in source pixels, as the pipeline makes them."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        xy = rng.uniform(0, 1100, (per_frame, 2))
        xyxy = np.concatenate([xy, xy + rng.uniform(4, 180, (per_frame, 2))], axis=1).astype(np.float32)
        out.append(Detections(xyxy, rng.uniform(0.25, 1, per_frame).astype(np.float32),
                              rng.integers(0, 80, per_frame).astype(np.int32)))
    return out


def writer_alone(sink_type, out: Path, frames: int, dets: list[Detections]) -> int:
    writer = sink_type(out).open("v.mp4")
    for i in range(frames):
        writer.write(i, i / 30, dets[i % len(dets)])
    writer.complete()
    return frames


def end_to_end(paths: list[Path], root: Path, out: Path, frames: int, picture, per_frame: int) -> int:
    backend = InstantBackend(per_frame)
    pipeline = Pipeline(backend, PipelineConfig(batch=BATCH, workers=2))
    plans = [FilePlan(i, Candidate(p, p.relative_to(root).as_posix(), frames, frames / 30), frames)
             for i, p in enumerate(paths)]
    progress = Progress(files=len(plans), frames_estimate=frames * len(plans), live=False, log_every_s=1e9)
    collector = Collector(plans, JsonlSink(out), ResumeLedger(out, "instant"), progress, None, out=out,
                          stop=pipeline.stop)
    for event in pipeline.run(jobs(paths, frames, picture)):
        collector.handle(event)
    if collector.stopped or len(collector.reports) != len(paths) or any(r.status != "ok" for r in collector.reports.values()):
        raise RuntimeError(f"end-to-end run did not complete: {collector.stopped} {collector.reports}")
    return frames * len(paths)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rate(measure: Callable[[], int]) -> tuple[float, float]:
    """Frames a wall second and frames a CPU second (all threads) of one measure: on a shared
    machine the second is the steadier estimate of what a quiet one gives."""
    wall, cpu = time.perf_counter(), cpu_s()
    frames = measure()
    return frames / (time.perf_counter() - wall), frames / max(cpu_s() - cpu, 1e-9)


def distribution(sizes: collections.Counter) -> str:
    total = sum(sizes.values())
    return ", ".join(f"{size}: {count / total:.1%}" for size, count in sorted(sizes.items(), reverse=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=2500, help="frames per video")
    p.add_argument("--detections", type=int, default=20, help="detections per frame")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="print a cProfile of each measure, write no table")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="framestream-overhead-"))
    try:
        root = work / "videos"
        root.mkdir()
        paths = []
        for i in range(args.videos):  # the collector's resume record stats each source
            path = root / f"v{i:02d}.mp4"
            path.write_bytes(b"")
            paths.append(path)
        image = np.full((*PLAN.dst_hw, 3), 114, np.uint8)
        dets = detections(args.detections)
        total = args.videos * args.frames
        n = args.detections

        def fresh(name: str) -> Path:
            folder = work / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            return folder

        measures: dict[str, Callable[[], int]] = {
            "pipeline alone, pictures in place": lambda: pipeline_alone(paths, args.frames, InPlace(image), n)[0],
            "pipeline alone, 384x640 host copy per frame": lambda: pipeline_alone(paths, args.frames, Letterboxed(image), n)[0],
            f"JSONL writer alone, {n} detections a frame": lambda: writer_alone(JsonlSink, fresh("jsonl"), total, dets),
            f"Parquet writer alone, {n} detections a frame": lambda: writer_alone(ParquetSink, fresh("parquet"), total, dets),
            "end to end: pipeline + collector + JSONL, pictures in place":
                lambda: end_to_end(paths, root, fresh("e2e"), args.frames, InPlace(image), n),
        }
        goals = {0: ">= 5,000", 1: "", 2: ">= 20,000", 3: "> JSONL", 4: ""}
        if args.profile:
            for name, measure in measures.items():
                profile = cProfile.Profile()
                fps, _ = profile.runcall(rate, measure)
                print(f"\n== {name}: {fps:.0f} frames/s (under the profiler)")
                pstats.Stats(profile).sort_stats("tottime").print_stats(14)
            return
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in measures}
        for _ in range(args.rounds):
            for name, measure in measures.items():
                results[name].append(rate(measure))
        _, sizes = pipeline_alone(paths, args.frames, InPlace(image), n)
        rows = [[name, statistics.median(w for w, _ in v), ", ".join(f"{w:.0f}" for w, _ in v),
                 statistics.median(c for _, c in v), goals[i]] for i, (name, v) in enumerate(results.items())]
        rows.append([f"batch sizes (batch {BATCH}, {LANES} lanes): share of batches", distribution(sizes), "", "", "full"])
        body = table(["measure", "frames/s (median)", "each round", "frames a CPU second (median)", "goal"], rows)
        body += (f"\n\n{args.videos} videos x {args.frames} frames, {n} detections a frame, batch {BATCH}, "
                 f"{LANES} lanes, 2 decode workers; the backend answers at once. Rounds alternate the measures. "
                 "Frames a CPU second counts every thread's CPU time: on a busy machine it estimates a quiet "
                 "one's frames/s better than wall time (for the threaded pipeline it is a lower bound).")
        body += f"\n\nLoad average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work slows every figure)."
        write_result("client_overhead", "Client overhead: the Python side at GPU rates", body)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
