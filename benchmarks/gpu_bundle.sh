#!/usr/bin/env bash
# What benchmarks/gpu_check.sh needs on the lent GPU machine and the machine lacks, packed into
# .gpu/ (git-ignored) in under the 64 MiB one call may carry: PyAV, PyNvVideoCodec, tritonclient
# (client.tar.xz) and nvidia-pytriton's tritonserver with numpy 1.26 for its python backend,
# whose stub predates numpy 2 (triton.tar.xz, triton-numpy1.tar.xz). cp312 wheels from PyPI,
# unpacked, without what the run never loads (other Pythons' stubs, libpython3.13, PyNvVideoCodec's
# CUDA 12 module, its sources and samples, numpy's tests), then xz -9e: about 60 MB from 190 MB
# of wheels. onnxruntime-gpu (256 MB wheel, 186 MB as xz) does not fit; the check says so.
#
#   bash benchmarks/gpu_bundle.sh     (from the repository root; needs pip, unzip, xz)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/.gpu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d "$work/wheels" \
  av==19.0.2 pynvvideocodec==2.2.4 tritonclient==2.73.0 python-rapidjson==1.25 \
  nvidia-pytriton==0.7.0 numpy==1.26.4
site="$work/site"
mkdir -p "$site"
for w in "$work"/wheels/*.whl; do unzip -q -o "$w" -d "$site"; done
cd "$site"
rm -rf samples benchmarks pynvvideocodec-*.data PyNvVideoCodec/PyNvVideoCodec_121* \
  nvidia_pytriton.libs/libpython3-*.13.so.1.0 pytriton/tritonserver/python_backend_stubs/3.{8,9,10,11,13}
find numpy -name tests -type d -prune -exec rm -rf {} +
mkdir -p "$out"
tar cf - av av.libs av-*.dist-info PyNvVideoCodec pynvvideocodec. pynvvideocodec-*.dist-info \
  tritonclient tritonclient-*.dist-info rapidjson* python_rapidjson-*.dist-info | xz -T0 -9e > "$out/client.tar.xz"
tar cf - pytriton nvidia_pytriton.libs nvidia_pytriton-*.dist-info | xz -T0 -9e > "$out/triton.tar.xz"
tar cf - numpy numpy.libs numpy-1.26.4.dist-info | xz -T0 -9e > "$out/triton-numpy1.tar.xz"
ls -l "$out"
