"""Every tuning default, with the reason for its value and where it was measured.

The modules that use a value import it from here, so a reader finds each one, and a change
to one, in one place. Measurements are in ``benchmarks/results/*.md`` (the file is named at
each value); a value no benchmark chose says so.
"""

from __future__ import annotations

# -- decoding and scheduling ------------------------------------------------------------------
# Decoders running at once on the CPU path. Inference is the bottleneck there: one 720p
# decoder delivers ~260 frames/s against ~18 inferred, and 2-8 workers gave speedups of
# 0.79-1.37, within run-to-run noise (results/bulk_scalability.md).
CPU_WORKERS = 1
# NVDEC sessions at once on the GPU path where PyNvVideoCodec does not report the GPU's decode
# engines (client/gpu/engines.py; otherwise one session per engine: 7 on an H200). 1 -> 4
# decoders gave 3.0-4.6x on an H200, 8 little more (results/gpu_check.md: 245 -> 1122 -> 1154
# frames/s, decoders not started together: benchmarks/gpu_visit.py nvdec redoes it).
GPU_WORKERS = 4
# A file is cut into segments when its work exceeds total work / (workers x SPLIT_FACTOR):
# shares smaller than one per worker leave LPT some slack to balance. Not tuned by a benchmark.
SPLIT_FACTOR = 2
# Estimated frames per key frame, for a --keyframes run's work estimate before any demuxing
# (a GOP of about 1 s at 30 frames/s). Only orders and splits work; never changes results.
KEYFRAME_INTERVAL_FRAMES = 30

# -- batching and queues ----------------------------------------------------------------------
# Frames per inference batch (--batch), formed across videos. Every benchmark ran at 8
# (results/embedded.md: 0.89 of bare onnxruntime at the same batch; results/triton.md); on a
# CPU, batches above 1 gain nothing (docs/performance.md), so 8 costs nothing there. Not swept.
BATCH = 8
# Decoded frames waiting for inference, at most: bounds memory whatever the number and length of
# the videos (results/embedded.md: peak RSS 320-441 MiB for 1, 20 and 40 files).
FRAMES_AHEAD = 32
# Formed batches waiting per lane: a lane that returns finds its next batch ready while the
# batcher forms the one after.
BATCHES_AHEAD = 2
# How often a blocked pipeline thread looks at the stop flag: a stop is seen within this.
POLL_S = 0.05
# How long the batcher waits for a frame before handing idle lanes a partial batch.
BATCHER_WAIT_S = 0.01

# -- embedded backend (onnxruntime) -----------------------------------------------------------
# Threads per onnxruntime session; sessions (lanes) default to the usable CPUs (affinity and
# cgroup quota: client/threads.py's cpu_sessions; that module also splits the CPUs with FFmpeg
# and OpenCV). Two 1-thread sessions beat one 2-thread session by about 1.25x on the 2-core
# machine (measured when the backend was written; not in results/).
THREADS_PER_SESSION = 1
# onnxruntime-gpu sessions on one GPU: two lanes, so one fills its batch while the other infers.
# Not measured (results/gpu_check.md: onnxruntime-gpu was not installable on the GPU machine).
GPU_SESSIONS = 2

# -- Triton ------------------------------------------------------------------------------------
# Requests in flight per model instance (--inflight's default is this x instances): 1 in flight
# reached 0.45-0.53 of embedded, 2 reached 0.88-0.90 (results/triton.md).
INFLIGHT_PER_INSTANCE = 2
# How long an unreachable server (or a model not being served) is retried before the files in
# flight fail (--retry-seconds): long enough for a server restart.
RETRY_S = 30.0
# First and longest wait between retries (the wait doubles).
RETRY_FIRST_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 2.0
# One request's deadline; a batch of 8 takes ~1 s on a 2-core CPU server (results/triton.md:
# ~120 ms per inference), so only a stuck server reaches it.
REQUEST_TIMEOUT_S = 60.0
# Closing a shared-memory ring: Triton (2.50+) refuses to unregister a region while a request's
# reference to it is still being released, which can outlast the response reaching us on a
# loaded machine; "in use" is retried this long (a batch of 8 on a 2-core CPU: ~1 s).
SHM_RELEASE_WAIT_S = 10.0
# Prometheus scrapes: how long one scrape, and the wait for the server's count to catch up
# after the run, may take, and how often it is asked meanwhile.
SCRAPE_TIMEOUT_S = 5.0
SCRAPE_POLL_S = 0.05

# -- outputs and reporting ---------------------------------------------------------------------
# Rows a Parquet writer buffers before writing a row group: memory per video stays bounded.
PARQUET_ROWS_PER_GROUP = 50_000
# Progress: a live bar redraws at most this often; a plain log line at most this often.
PROGRESS_REDRAW_S = 0.2
PROGRESS_LOG_EVERY_S = 10.0
# The run's rate (client/rate.py): measured over the last RATE_WINDOW_S of results, from the
# first result on (start-up and warm-up are not throughput); an ETA only once RATE_MIN_SPAN_S
# of results are in and the window's two halves agree within RATE_TOLERANCE, over at least
# RATE_MIN_EVENTS arrivals (a batch arrives at once: a few batches are too few to judge).
RATE_WINDOW_S = 10.0
RATE_MIN_SPAN_S = 3.0
RATE_TOLERANCE = 0.2
RATE_MIN_EVENTS = 8
RATE_BURST_S = 0.05  # results this close to the first of their burst are one arrival
# The ETA a person is shown (client/rate.py EtaSmoother): from the rate smoothed with this time
# constant, shown from the first steady reading on and never hidden again.
ETA_SMOOTHING_S = 10.0

# -- Ray (--ray) ------------------------------------------------------------------------------
RAY_CONNECT_TIMEOUT_S = 5.0  # the head must answer (TCP, then gRPC's greeting) within this: Ray itself retries for minutes
RAY_JOIN_TIMEOUT_S = 60.0  # ray.init once the head has answered (a driver joins a live cluster in seconds)
RAY_START_TIMEOUT_S = 300.0  # a node's worker starting (imports, model load, its Triton's checks)
RAY_STOP_WAIT_S = 60.0  # after a stop, how long the units in flight may take to hand back what they have
RAY_MAX_ATTEMPTS = 3  # a unit lost this many times (nodes dying under it, or a bug) fails its file
