"""The bulk pipeline: bounded queues between decode workers, a batcher and inference lanes.

    jobs -> [decode workers] -> frames (bounded) -> [batcher] -> batches (bounded) -> [lanes]
                     \\                                                                 |
                      `--------------- file ends ---------> events <-- frame results --'

Decoding and inference overlap; a full queue blocks its producer, so memory is bounded by
the queue sizes whatever the number or length of the files. Batches are formed across files
of the same letterbox shape, so the end of one file does not run half-empty batches. The
caller iterates :meth:`Pipeline.run`'s events in its own thread and does all the writing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from . import defaults
from .contract import ModelInfo
from .decode import DecodedFrame, FrameSource, Sampling
from .detections import Detections
from .errors import DeviceError, FramestreamError, PipelineCrash, ServerUnavailableError
from .gpu.faults import device_fault
from .infer import Backend
from .letterbox import LetterboxPlan, boxes_to_source, plan_letterbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    batch: int = defaults.BATCH
    workers: int = defaults.CPU_WORKERS  # decode workers (files decoded at once)
    frames_ahead: int = defaults.FRAMES_AHEAD  # decoded frames waiting for inference, at most
    batches_ahead: int = defaults.BATCHES_AHEAD  # formed batches waiting for a lane, per lane
    square: bool = False  # the model's full square for every video, even if it takes rectangles
    sampling: Sampling = field(default_factory=Sampling)
    decode_threads: int = 0  # FFmpeg threads per decoder; 0 lets FFmpeg choose
    gpu: bool = False  # decode with NVDEC and letterbox with CUDA (frames stay on the GPU)
    gpu_device: int = 0  # the GPU NVDEC decodes on (--devices: one process per GPU)


@dataclass(frozen=True)
class Job:
    """A whole file, or one segment of a split file."""

    file_id: int
    open_source: Callable[[], FrameSource]
    segment: int = 0
    seq_of: Mapping[int, int] | None = None  # split files: frame index -> position in the file's output


# -- events the caller receives ---------------------------------------------------------
@dataclass(frozen=True)
class FrameResult:
    file_id: int
    seq: int  # position among the file's sampled frames, 0..frames-1
    index: int  # the frame's number in presentation order
    t_s: float  # its time in seconds (the output's "t")
    detections: Detections  # in source pixels
    letterbox: LetterboxPlan | None = None  # the model input the frame got (reported per video)


@dataclass(frozen=True)
class FileStarted:
    file_id: int
    segment: int


@dataclass(frozen=True)
class FileEnded:
    """The end of one job (a file or a segment): it travels behind that job's frames."""

    file_id: int
    segment: int
    frames: int  # sampled frames sent to inference
    error: str | None
    wall_s: float = 0.0  # from the job's start to its last frame handed on
    decode_s: float = 0.0  # of which decoding and letterboxing (not waiting for a full queue)
    decoder: int = 0  # the decode worker that ran it (the schedule's Gantt rows)
    start_s: float = 0.0  # when it started, in seconds since the pipeline started
    fatal: bool = False  # the device failed, not the file (DeviceError): stop the run


@dataclass(frozen=True)
class BatchFailed:
    frames_by_file: dict[int, int]  # file_id -> frames of that file in the failed batch
    reason: str
    fatal: bool = False  # the backend is gone (server unreachable past its retries, GPU failed): stop the run


Event = FrameResult | FileStarted | FileEnded | BatchFailed


@dataclass
class _Batch:
    frames: list[tuple[int, int, DecodedFrame]]  # (file_id, seq, frame)


_DONE = object()


class Pipeline:
    def __init__(self, backend: Backend, config: PipelineConfig) -> None:
        self.backend = backend
        self.config = config
        model: ModelInfo = backend.model
        self.batch_size = min(config.batch, model.max_batch or config.batch)
        minimal = model.dynamic_hw and not config.square
        self._plan_for = lambda hw: plan_letterbox(hw, model.imgsz, minimal=minimal)
        self._stop = threading.Event()
        self._abandoned = threading.Event()  # stop waiting for the batches in flight too
        self._queues: dict[str, queue.Queue] = {}
        self._crash: tuple[str, BaseException] | None = None  # (stage, error) of a stage that died
        self._threads: list[threading.Thread] = []
        self._lane_threads: list[threading.Thread] = []
        self._lanes_left = 0
        self._events: queue.Queue = queue.Queue()
        self._open = threading.Event()  # more jobs may come (add_job) until end_jobs
        self._started = time.perf_counter()

    def queue_depths(self) -> dict[str, int]:
        """Items waiting between stages now (for telemetry)."""
        return {name: q.qsize() for name, q in self._queues.items()}

    def stop(self) -> None:
        """Stop taking work; lanes finish the batches they hold, and a backend that is waiting
        out an outage gives up (so a stop, SIGTERM from ``docker stop`` say, is prompt)."""
        self._stop.set()
        self.backend.abort()

    def abandon(self) -> None:
        """Stop, and stop waiting: :meth:`events` ends at its next poll, leaving the results of
        the batches in flight unread (a second Ctrl-C or SIGTERM: the user will not wait)."""
        self._abandoned.set()
        self.stop()

    def start(self, jobs: Iterable[Job], *, more: bool = False) -> None:
        """Start every stage on ``jobs``; read results with :meth:`events`, end with :meth:`close`.
        ``more``: decoders wait for jobs given later by :meth:`add_job` until :meth:`end_jobs`
        (a long-lived pipeline, as a Ray node's worker keeps one)."""
        if more:
            self._open.set()
        lanes = self.backend.lanes
        job_q: queue.Queue = queue.Queue()
        for job in jobs:
            job_q.put(job)
        frame_q: queue.Queue = queue.Queue(maxsize=self.config.frames_ahead)
        batch_q: queue.Queue = queue.Queue(maxsize=self.config.batches_ahead * lanes)
        self._events = queue.Queue()
        self._queues = {"jobs": job_q, "frames": frame_q, "batches": batch_q}
        self._started = time.perf_counter()
        workers = [self._thread(f"decode-{i}", self._decode_worker, i, job_q, frame_q, self._events)
                   for i in range(self.config.workers)]
        batcher = self._thread("batcher", self._batcher, frame_q, batch_q, len(workers), lanes)
        self._lane_threads = [self._thread(f"lane-{lane}", self._lane, lane, batch_q, self._events)
                              for lane in range(lanes)]
        self._threads = [*workers, batcher, *self._lane_threads]
        self._lanes_left = lanes
        for t in self._threads:
            t.start()

    def add_job(self, job: Job) -> None:
        """One more job for a pipeline started with ``more=True``."""
        if not self._open.is_set():
            raise RuntimeError("add_job needs a pipeline started with more=True and not yet ended")
        self._queues["jobs"].put(job)

    def end_jobs(self) -> None:
        """No more jobs: decoders end once the queue is empty, and the events with them."""
        self._open.clear()

    def events(self) -> Iterator[Event]:
        """Events until every lane is done. Its state lives in the pipeline, so after an
        interrupt a new call picks up where the last one stopped (the caller drains the
        results of batches that were in flight)."""
        while self._lanes_left and not self._abandoned.is_set():
            try:
                item = self._events.get(timeout=defaults.POLL_S)
            except queue.Empty:
                if not any(t.is_alive() for t in self._lane_threads):
                    return  # every lane has ended (its end marker may have been lost to an interrupt)
                continue
            if item is _DONE:
                self._lanes_left -= 1
            else:
                yield item

    def close(self) -> None:
        """Stop every stage and join its thread; the backend may close its buffers only after
        this. Each stage polls the stop flag, so a thread ends within one poll (a lane within
        its current request). :attr:`crash` then says whether a stage failed."""
        self._stop.set()
        for t in self._threads:
            t.join()

    @property
    def crash(self) -> PipelineCrash | None:
        """A stage that failed outside any one file's work (a bug), as an error to report."""
        if self._crash is None:
            return None
        stage, error = self._crash
        return PipelineCrash(f"the {stage} stage failed: {type(error).__name__}: {error}")

    def run(self, jobs: Iterable[Job]) -> Iterator[Event]:
        """Run every job and yield its events; closing the iterator stops the threads.
        Raises :class:`PipelineCrash` at the end if a stage failed."""
        self.start(jobs)
        try:
            yield from self.events()
        finally:
            self.close()
        if self.crash is not None:
            raise self.crash

    def _thread(self, name: str, stage: Callable[..., None], *args: object) -> threading.Thread:
        """A stage thread; if the stage itself raises (a bug: per-file failures are caught
        inside it), the run is stopped and :meth:`run` raises instead of hanging or losing files."""

        def guarded() -> None:
            try:
                stage(*args)
            except BaseException as e:  # noqa: BLE001 - recorded and re-raised by run()
                log.debug("pipeline stage %s failed", name, exc_info=True)
                if self._crash is None:
                    self._crash = (name, e)
                self._stop.set()

        return threading.Thread(target=guarded, name=name, daemon=True)

    # -- stages ---------------------------------------------------------------------------
    def _put(self, q: queue.Queue, item: object) -> bool:
        """Blocking put that gives up when the run is stopped."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=defaults.POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _decode_worker(self, decoder: int, job_q: queue.Queue, frame_q: queue.Queue, events: queue.Queue) -> None:
        while not self._stop.is_set():
            job = self._next_job(job_q)
            if job is None:
                break
            events.put(FileStarted(job.file_id, job.segment))
            count, error, fatal = 0, None, False
            started = time.perf_counter()
            waited = 0.0
            try:
                with job.open_source() as source:
                    for frame in source.frames(self._plan_for):
                        seq = job.seq_of[frame.index] if job.seq_of is not None else count
                        put_start = time.perf_counter()
                        if not self._put(frame_q, (job.file_id, seq, frame)):
                            return
                        waited += time.perf_counter() - put_start
                        count += 1
            except DeviceError as e:  # the GPU, not the file: no later file would fare better
                error, fatal = str(e), True
            except FramestreamError as e:
                error = str(e)
            except Exception as e:  # a bug must cost one file, not the run
                log.debug("decoding job %s failed", job.file_id, exc_info=True)
                error = f"internal error: {type(e).__name__}: {e}"
            # The end marker travels behind the job's frames, so it reaches the caller
            # only after the batcher has seen them all.
            wall = time.perf_counter() - started
            ended = FileEnded(job.file_id, job.segment, count, error, wall, wall - waited, decoder,
                              started - self._started, fatal)
            if not self._put(frame_q, ended):
                return
        self._put(frame_q, _DONE)

    def _next_job(self, job_q: queue.Queue) -> Job | None:
        """The next job; None when there are no more (and none will come) or the run stopped."""
        while not self._stop.is_set():
            waiting = self._open.is_set()  # read before the get: a job added before end_jobs is seen
            try:
                return job_q.get(timeout=defaults.POLL_S) if waiting else job_q.get_nowait()
            except queue.Empty:
                if not waiting:
                    return None
        return None

    def _batcher(self, frame_q: queue.Queue, batch_q: queue.Queue, producers: int, lanes: int) -> None:
        groups: dict[tuple[int, int], list] = {}
        live = producers

        def flush(key: tuple[int, int]) -> bool:
            return self._put(batch_q, _Batch(groups.pop(key)))

        while live and not self._stop.is_set():
            try:
                item = frame_q.get(timeout=defaults.BATCHER_WAIT_S)
            except queue.Empty:
                # Decoding is behind: hand the lanes what we have rather than let them idle.
                if groups and batch_q.empty():
                    flush(max(groups, key=lambda k: len(groups[k])))
                continue
            if item is _DONE:
                live -= 1
            elif isinstance(item, FileEnded):
                self._put(batch_q, item)  # after the file's frames, in batch order
            else:
                key = item[2].plan.dst_hw
                groups.setdefault(key, []).append(item)
                if len(groups[key]) >= self.batch_size:
                    flush(key)
        for key in list(groups):
            flush(key)
        for _ in range(lanes):
            self._put(batch_q, _DONE)

    def _lane(self, lane: int, batch_q: queue.Queue, events: queue.Queue) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = batch_q.get(timeout=defaults.POLL_S)
                except queue.Empty:
                    continue
                if item is _DONE:
                    return
                if isinstance(item, FileEnded):
                    events.put(item)
                    continue
                self._infer(lane, item, events)
        finally:
            events.put(_DONE)

    def _infer(self, lane: int, batch: _Batch, events: queue.Queue) -> None:
        """One batch: fill, infer, map boxes back. Any failure on the way fails this batch's
        frames (their files end as errors); the lane and the other files go on."""
        try:
            # Each frame is letterboxed (GPU) or copied (CPU) straight into its slot of the
            # buffer the backend reads: a shared-memory region, a device or a host buffer.
            images = self.backend.batch_buffer(lane, (len(batch.frames), *batch.frames[0][2].plan.dst_hw, 3))
            for slot, (_, _, frame) in enumerate(batch.frames):
                frame.picture.write_into(images[slot])
            out = self.backend.infer(lane, images)
            results = [_frame_result(out.rows(i), file_id, seq, frame)
                       for i, (file_id, seq, frame) in enumerate(batch.frames)]
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.debug("batch failed on lane %s", lane, exc_info=True)
            counts: dict[int, int] = {}
            for file_id, _, _ in batch.frames:
                counts[file_id] = counts.get(file_id, 0) + 1
            gone = isinstance(e, (ServerUnavailableError, DeviceError))
            gone = gone or (self.config.gpu and device_fault(e) is not None)  # the GPU, not this batch's frames
            events.put(BatchFailed(counts, reason, fatal=gone))
            return
        for result in results:  # all or nothing: no frame is both a result and lost
            events.put(result)


def _frame_result(rows: np.ndarray, file_id: int, seq: int, frame: DecodedFrame) -> FrameResult:
    """One frame's contract rows (model pixels) as :class:`Detections` in source pixels."""
    detections = Detections(
        xyxy=boxes_to_source(rows[:, :4], frame.plan),
        confidence=rows[:, 4].astype(np.float32),  # a copy: the backend's output array is not kept
        class_id=rows[:, 5].astype(np.int32),
    )
    return FrameResult(file_id, seq, frame.index, frame.t, detections, frame.plan)
