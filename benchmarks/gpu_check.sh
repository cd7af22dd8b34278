#!/usr/bin/env bash
# The device check for a lent GPU machine (one H200, 16 cores, no network), in under 10 minutes:
#  1. the real client (NVDEC, CUDA letterbox) against a real tritonserver through gRPC, system
#     and CUDA shared memory, at 1/2/4/8 requests in flight, outputs checked against the
#     embedded CPU run and the CUDA regions read from the server during and after each run;
#  2. the `gpu` tests, also under per-thread default streams;
#  3. the original study's experiment (CPU path) on 16 cores: workers 1..16, splitting on/off.
# Results go to $OUT (benchmarks/results/gpu when run here). NVDEC's and the CUDA letterbox's
# rates (benchmarks.gpu, measured 2026-11-28) need a call of their own: `python3 -m
# benchmarks.gpu --out "$OUT" --model MODEL` after the unpack stage below.
#
# Prepare here, once: `bash benchmarks/gpu_bundle.sh` (writes .gpu/, about 60 MB: PyAV,
# PyNvVideoCodec, tritonclient, and nvidia-pytriton's server with numpy 1.26 for its python
# backend; what the machine lacks). Run it there with carry [".gpu"]: bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T0=$SECONDS
stage() { echo "== $1 ($((SECONDS - T0)) s)"; }

stage "unpack"
mkdir -p /tmp/site
tar -xJf .gpu/client.tar.xz -C /tmp/site || { echo "cannot unpack .gpu/client.tar.xz"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
# The local Triton's own environment (server_config.triton_env), assembled from the carried
# server and numpy 1.26 (the python backend's stub predates numpy 2) plus this machine's
# onnxruntime, and stamped as prepared: nothing can be pip-installed here.
export FRAMESTREAM_TRITON_ENV=/tmp/triton-env
SP=$FRAMESTREAM_TRITON_ENV/lib/python3.12/site-packages
mkdir -p "$SP"
tar -xJf .gpu/triton.tar.xz -C "$SP" && tar -xJf .gpu/triton-numpy1.tar.xz -C "$SP"
ln -sfn "$(python3 -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')" "$SP/onnxruntime"
python3 -c 'from server_config.triton_env import triton_env; triton_env().stamp()'
if ! ldconfig -p | grep -q 'libpython3.12.so.1.0'; then  # the stub links it
  lib=$(find / -xdev -name 'libpython3.12.so.1.0' 2>/dev/null | head -1)
  [ -n "$lib" ] && export LD_LIBRARY_PATH=$(dirname "$lib"):${LD_LIBRARY_PATH:-}
  echo "libpython3.12.so.1.0: ${lib:-not found}"
fi

stage "probe"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/probe.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/probe.txt"
import os, sys, PyNvVideoCodec as nvc, cupy, av, onnxruntime as ort, grpc, google.protobuf as pb
import tritonclient.grpc, tritonclient.utils.cuda_shared_memory
from client.gpu import probe
print(sys.version.split()[0], "PyNvVideoCodec", nvc.__version__, "cupy", cupy.__version__, "av", av.__version__,
      "ort", ort.__version__, ort.get_available_providers(), "grpcio", grpc.__version__, "protobuf", pb.__version__,
      "cores", os.cpu_count())
print("probe:", probe())
PY

stage "1. real Triton: gRPC payload, system and CUDA shared memory, GPU client"
timeout 170 python3 -m benchmarks.triton --device gpu --transports off,system,cuda --inflight 1,2,4,8 \
  --clips 4 --frames 30 --instances 12 --name triton_gpu 2>&1 | tee "$OUT/triton_gpu.log"
cp benchmarks/results/triton_gpu.md "$OUT/" 2>/dev/null
# the server's log is left only where the limit killed the benchmark before it stopped the server
ls /tmp/framestream-triton-*/tritonserver.log >/dev/null 2>&1 && tail -n 30 /tmp/framestream-triton-*/tritonserver.log >> "$OUT/triton_gpu.log"

stage "2. gpu tests"
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
echo "== 4 NVDEC threads under per-thread default streams (issue 19, finding 1) ==" | tee -a "$OUT/gpu_tests.log"
CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1 timeout 40 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_gpu.py -k "four_decoder_threads or letterbox_matches" 2>&1 | tee -a "$OUT/gpu_tests.log"
stage "3. the study's experiment on the CPU path, 16 cores"
timeout 280 python3 -m benchmarks.bulk_scalability --workers 1,2,4,8,16 --modes fps2 --sets skewed,dominant --scale 12 \
  --name bulk_scalability_16 2>&1 | tee "$OUT/bulk_scalability_16.log"
cp benchmarks/results/bulk_scalability_16.md benchmarks/results/bulk_scalability_16.png "$OUT/" 2>/dev/null

stage "done"
