#!/usr/bin/env bash
# The GPU visit for issue 26, in steps that each fit one device call (10 minutes, 64 MiB carried)
# and the session's 15 minutes: step 1, then step 2 at once (the machine stays warm 30 s after a
# call, and keeps what step 1 unpacked in /tmp while it does), step 3 if time is left.
#
# Prepare here:  python -m benchmarks.gpu_carry        -> .gpu/ort/onnxruntime-gpu.tar.xz (57.5 MiB)
#                bash benchmarks/gpu_bundle.sh          -> .gpu/{client,triton,triton-numpy1}.tar.xz
# Then, as device calls (each stage under its own limit, its rows in $OUT as they come):
#  step 1, carry [".gpu/ort"], timeout_s 300:
#    bash benchmarks/gpu_visit.sh step1   unpack onnxruntime-gpu; the CUDA provider starts, agrees
#                                         with the CPU one; the bare model swept (sessions x batch)
#  step 2, carry [".gpu/client.tar.xz", ".gpu/triton.tar.xz", ".gpu/triton-numpy1.tar.xz"], timeout_s 580:
#    bash benchmarks/gpu_visit.sh step2   end-to-end rows through Triton's gpu config over CUDA
#                                         shared memory at 2/4/8/16 in flight; NVDEC at 1/4/7/8/14;
#                                         the embedded GPU run against the bare model. A machine gone
#                                         cold since step 1 has no onnxruntime-gpu: only NVDEC runs.
#  step 3 (optional), carry [".gpu/client.tar.xz"], timeout_s 300:
#    bash benchmarks/gpu_visit.sh step3   the seed's experiment on 16 cores (CPU path)
# Dry run here (no GPU): bash benchmarks/gpu_visit.sh dry-run
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ORT=/tmp/framestream-ort  # step 1's unpacked onnxruntime-gpu, found by step 2 on the same machine
T0=$SECONDS
stage() { echo "== $1 ($((SECONDS - T0)) s)" | tee -a "$OUT/visit.log"; }
# A device call brings back 8 files at most: the tables, visit.log and one pack of the logs.
pack_logs() { [ -d "$OUT/logs" ] && tar -czf "$OUT/logs-${1:-step}.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"; true; }
trap 'pack_logs "${1:-}"' EXIT
visit() {  # visit LIMIT_S STAGE [flags]: one stage under its own time limit, its rows kept if it is cut
  local limit=$1; shift
  timeout "$limit" python3 -m benchmarks.gpu_visit "$@" --out "$OUT" 2>&1 | tee -a "$OUT/visit.log"
}

use_ort() {  # onnxruntime-gpu first on the path, CUDA 13 and cuDNN 9 from the machine's torch wheels
  [ -f "$ORT/env.sh" ] || return 1
  . "$ORT/env.sh"
}

case "${1:-}" in
step1)
  stage "unpack onnxruntime-gpu"
  python3 - <<'PY' || exit 1  # the pack that arrived is the one gpu_carry checked
import hashlib, json
m = json.load(open(".gpu/ort/onnxruntime-gpu.json"))
got = hashlib.sha256(open(".gpu/ort/" + m["archive"], "rb").read()).hexdigest()
print("carry:", m["wheel"], m["arch"], m["mib"], "MiB,", "sha256 ok" if got == m["sha256"] else "SHA256 MISMATCH")
raise SystemExit(got != m["sha256"])
PY
  rm -rf "$ORT" && mkdir -p "$ORT/site"
  tar -xJf .gpu/ort/onnxruntime-gpu.tar.xz -C "$ORT/site" || { echo "cannot unpack .gpu/ort"; exit 1; }
  libs=$(python3 - <<'PY'
import glob, os, site
wanted = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcufft.so.12",
          "libnvrtc.so.13", "libcudnn.so.9")
dirs = []
for root in site.getsitepackages():
    for name in wanted:
        for hit in glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True):
            d = os.path.dirname(hit)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
PY
)
  echo "CUDA libraries: $libs" | tee -a "$OUT/visit.log"
  printf 'export PYTHONPATH=%s:%s\nexport LD_LIBRARY_PATH=%s:${LD_LIBRARY_PATH:-}\n' "$ORT/site" "$PWD" "$libs" > "$ORT/env.sh"
  use_ort
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$OUT/visit.log"
  stage "bare: provider, agreement, sweep"
  visit 240 bare
  stage "step 1 done"
  ;;
step2)
  stage "unpack client and server"
  mkdir -p /tmp/site && tar -xJf .gpu/client.tar.xz -C /tmp/site || { echo "cannot unpack .gpu/client.tar.xz"; exit 1; }
  if use_ort; then have_ort=1; else have_ort=0; export PYTHONPATH=$PWD; fi
  export PYTHONPATH=/tmp/site:$PYTHONPATH
  # the local Triton's environment, as gpu_check.sh assembles it, with this onnxruntime (the GPU one after step 1)
  export FRAMESTREAM_TRITON_ENV=/tmp/triton-env
  SP=$FRAMESTREAM_TRITON_ENV/lib/python3.12/site-packages
  mkdir -p "$SP" && tar -xJf .gpu/triton.tar.xz -C "$SP" && tar -xJf .gpu/triton-numpy1.tar.xz -C "$SP"
  ln -sfn "$(python3 -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')" "$SP/onnxruntime"
  python3 -c 'from server_config.triton_env import triton_env; triton_env().stamp()'
  if ! ldconfig -p | grep -q 'libpython3.12.so.1.0'; then
    lib=$(find / -xdev -name 'libpython3.12.so.1.0' 2>/dev/null | head -1)
    [ -n "$lib" ] && export LD_LIBRARY_PATH=$(dirname "$lib"):${LD_LIBRARY_PATH:-}
  fi
  if [ "$have_ort" = 1 ]; then
    stage "e2e: real client into Triton (gpu config) over CUDA shared memory"
    visit 300 e2e
  else
    echo "no onnxruntime-gpu from step 1 (the machine went cold): no Triton gpu config, no embedded GPU run" | tee -a "$OUT/visit.log"
  fi
  stage "nvdec: 1/4/7/8/14 sessions"
  visit 90 nvdec
  if [ "$have_ort" = 1 ]; then
    stage "embedded GPU run against the bare model"
    visit 120 embedded
  fi
  stage "step 2 done"
  ;;
step3)
  stage "unpack client"
  mkdir -p /tmp/site && tar -xJf .gpu/client.tar.xz -C /tmp/site || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  stage "the seed's experiment on 16 cores"
  # --scale 100: about 28 times the 2026-12-04 run's 3.6 s with one worker (scale 12, skewed),
  # if it scales with the frames; not calibrated (no GPU machine since). The dominant set first.
  timeout 280 python3 -m benchmarks.bulk_scalability --workers 1,2,4,8,16 --modes fps2 --sets dominant,skewed \
    --scale 100 --name bulk_scalability_16 2>&1 | tee "$OUT/bulk_scalability_16.log"
  cp benchmarks/results/bulk_scalability_16.md "$OUT/" 2>/dev/null
  stage "step 3 done"
  ;;
dry-run)  # here, without a GPU: every stage at tiny sizes on the CPU stand-ins
  export PYTHONPATH=$PWD
  small=(--cpu --size 640x360 --base-frames 60 --files 2 --e2e-frames 240)
  stage "dry run: bare";     visit 240 bare --cpu --sessions 1,2 --batches 1,4 --seconds 2 --agree-frames 4
  stage "dry run: e2e";      visit 300 e2e "${small[@]}" --inflight 2,4 --agree-at 2 --instances 1
  stage "dry run: nvdec";    visit 60 nvdec --cpu
  stage "dry run: embedded"; visit 200 embedded "${small[@]}" --embedded-sessions 1 --batch 4
  stage "dry run done"
  ;;
*)
  echo "usage: bash benchmarks/gpu_visit.sh step1|step2|step3|dry-run" >&2
  exit 2
  ;;
esac
