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
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 -m server_config.model build --imgsz 640 --out /tmp/yolov8n.onnx >/dev/null
timeout 240 python3 -m benchmarks.gpu --out "$OUT" --model /tmp/yolov8n.onnx 2>&1 | tee "$OUT/gpu_bench.log"
rm -rf "$OUT/work"
