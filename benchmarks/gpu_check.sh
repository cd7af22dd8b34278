#!/usr/bin/env bash
# The device check for a lent GPU machine (one H200, no network), in under 8 minutes:
# install what is missing from carried wheels, run the `gpu` tests, measure NVDEC, the CUDA
# letterbox and (where onnxruntime-gpu exists) the embedded GPU run. Results go to $OUT.
#
# Prepare here, once:  echo /.whl/ >> .git/info/exclude, then download into .whl/ the
# cp312 manylinux wheels of pynvvideocodec and av (see the device tool's README); run it
# there with carry [".whl"]:  bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/probe.txt"
import PyNvVideoCodec as nvc, cupy, av, onnxruntime as ort
from client.gpu import probe
print("PyNvVideoCodec", nvc.__version__, "cupy", cupy.__version__, "av", av.__version__, "ort", ort.__version__,
      ort.get_available_providers())
print("probe:", probe())
PY
# Expected: "probe: GpuProbe(ok=True, reason='NVIDIA H200, NVDEC via PyNvVideoCodec 2.x.y')"; any
# other major version is refused by the probe (issue 19, finding 2).
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
# Expected: every gpu test passes, among them the CUDA shm ring through the public DLPack route
# (test_cuda_shm_ring_writes_through_its_views_and_releases_every_region), four decoder threads
# equal to one (test_four_decoder_threads_give_the_frames_pyav_gives) and, where onnxruntime-gpu
# is installed, sessions on CUDA (test_the_embedded_gpu_sessions_run_on_cuda_not_a_cpu_fallback).
echo "== 4 NVDEC threads under per-thread default streams (issue 19, finding 1) ==" | tee "$OUT/threads_ptds.log"
CUPY_CUDA_PER_THREAD_DEFAULT_STREAM=1 timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_gpu.py -k "four_decoder_threads or letterbox_matches" 2>&1 | tee -a "$OUT/threads_ptds.log"
# Expected: passes. Each decoder runs on a stream of its own given to NVDEC, each lane on its
# own, ordered by events (client/gpu/streams.py; the ordering itself is tested without a GPU in
# tests/test_gpu_streams.py); a failure here ("differs from one thread") is a race, not noise.
python3 -m server_config.model build --imgsz 640 --out /tmp/yolov8n.onnx >/dev/null
timeout 240 python3 -m benchmarks.gpu --out "$OUT" --model /tmp/yolov8n.onnx 2>&1 | tee "$OUT/gpu_bench.log"
rm -rf "$OUT/work"
