#!/usr/bin/env bash
# Fill docker/wheelhouse/ with every wheel an image needs, so `docker build` installs with
# --no-index (air-gapped build machines, or containers whose pip cannot reach the index).
#
#   docker/wheelhouse.sh                                   # Dockerfile.cpu: Python 3.11, + the local Triton's environment
#   docker/wheelhouse.sh --python 3.12 --extras gpu,client,parquet,metrics,exact --glibc 2.39 --no-server-env   # Dockerfile (GPU)
#
# Runs on a host with network and any Python 3.11+ with pip: wheels are chosen for the
# image's Python and glibc (not the host's). Several runs accumulate in the same directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python_version=3.11 extras=cpu,client,parquet,metrics,exact glibc=2.36 dest=$here/wheelhouse server_env=1
while [ $# -gt 0 ]; do
  case $1 in
    --python) python_version=$2; shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --glibc) glibc=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    --no-server-env) server_env=0; shift ;;
    *) echo "usage: $0 [--python 3.11] [--extras cpu,client,parquet,metrics,exact] [--glibc 2.36] [--dest DIR] [--no-server-env]" >&2; exit 1 ;;
  esac
done
py=${PYTHON:-python3}
mkdir -p "$dest"
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
# The project's dependencies and extras as pyproject.toml states them, plus its build backend.
"$py" - "$here/../pyproject.toml" "$extras" > "$requirements" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
reqs = list(project["project"]["dependencies"]) + list(project["build-system"]["requires"])
for extra in filter(None, sys.argv[2].split(",")):
    reqs += project["project"]["optional-dependencies"][extra]
print("\n".join(reqs))
PY
platforms=()
for minor in $(seq 17 "${glibc#2.}"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
"$py" -m pip download --quiet --dest "$dest" --only-binary=:all: --python-version "$python_version" \
  --implementation cp "${platforms[@]}" -r "$requirements"
# The local Triton's environment, installed apart from the client (server_config/triton-env.txt),
# so resolved on its own: its numpy<2 beside the client's numpy 2.
if [ "$server_env" = 1 ]; then
  "$py" -m pip download --quiet --dest "$dest" --only-binary=:all: --python-version "$python_version" \
    --implementation cp "${platforms[@]}" -r "$here/../server_config/triton-env.txt"
fi
echo "$(ls "$dest"/*.whl | wc -l) wheels in $dest for Python $python_version ($extras)"
