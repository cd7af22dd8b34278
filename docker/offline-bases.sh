#!/usr/bin/env bash
# Stand-in base images for machines that cannot pull from an image registry, made from the
# Debian packages of this host's apt mirror (debootstrap) and cached in the Docker engine:
#
#   framestream-offline/python:3.11-bookworm   Debian's python3 + python3-venv + libpython3.11
#                                              (the python-backend stub links libpython3.11)
#   framestream-offline/prometheus:bookworm    Debian's prometheus package, run like prom/prometheus
#
# Prints the environment that makes docker/compose.yaml build and run on them:
#   eval "$(docker/offline-bases.sh)"
# An image already in the engine is kept (--rebuild makes both again). Needs root and debootstrap.
set -euo pipefail
PYTHON_IMAGE=framestream-offline/python:3.11-bookworm
PROMETHEUS_IMAGE=framestream-offline/prometheus:bookworm
rebuild=0
[ "${1:-}" = --rebuild ] && rebuild=1

mirror() {  # the first Debian mirror this host's apt uses (deb822 .sources or one-line lists)
  { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
  } | grep -v security | head -n1
}

make_image() {  # make_image TAG PACKAGES PREPARE CHANGE...: debootstrap bookworm, PREPARE ROOT, import
  local tag=$1 packages=$2 prepare=$3; shift 3
  if [ $rebuild = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then return; fi
  local root changes=()
  root=$(mktemp -d)
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$(mirror)" >"$root.log" 2>&1 \
    || { echo "debootstrap failed for $tag (log: $root.log)" >&2; rm -rf "$root"; return 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  "$prepare" "$root"
  for change in "$@"; do changes+=(--change "$change"); done
  tar -C "$root" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  rm -rf "$root" "$root.log"
  echo "made $tag" >&2
}

command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install -y debootstrap" >&2; exit 1; }
[ -n "$(mirror)" ] || { echo "no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }
nothing() { :; }
prometheus_dirs() {  # run as nobody, as prom/prometheus; Debian's build stores in /var/lib/prometheus
  mkdir -p "$1/prometheus" "$1/var/lib/prometheus/metrics2"
  chown -R 65534:65534 "$1/prometheus" "$1/var/lib/prometheus"
}
make_image "$PYTHON_IMAGE" python3,python3-venv,libpython3.11,ca-certificates nothing 'CMD ["python3"]' &
make_image "$PROMETHEUS_IMAGE" prometheus,wget prometheus_dirs \
  'ENTRYPOINT ["/usr/bin/prometheus"]' 'CMD ["--config.file=/etc/prometheus/prometheus.yml"]' \
  'WORKDIR /prometheus' 'USER nobody' 'EXPOSE 9090' &
wait %1 && wait %2
echo "export FRAMESTREAM_PYTHON_BASE=$PYTHON_IMAGE FRAMESTREAM_PROMETHEUS_IMAGE=$PROMETHEUS_IMAGE"
