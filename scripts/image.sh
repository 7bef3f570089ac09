#!/usr/bin/env bash
# Builds the container image with buildah (no Docker engine needed); prints the image reference last.
#   scripts/image.sh build cpu           the CPU flavour with the tiny test model, offline: a Debian base made
#                                        with debootstrap, uv from its PyPI wheel, torch's CPU wheel from a
#                                        local index, the model fetched by fetch.py from a local git-lfs repo
#   scripts/image.sh build cpu 0.6b      the same with a size (0.6b, 4b, 8b) or hub name at its pinned revision
#   scripts/image.sh build cuda [4b]     the CUDA image (needs the registries and the hub)
#   MODEL_SOURCE=modelscope MODEL_REVISION=<ModelScope commit SHA or tag> scripts/image.sh build cuda 4b
#                                        the model from ModelScope (HUB_URL: a mirror of the source)
# Layers are cached: a rebuild after a gateway edit rebuilds the wheel and the runtime's code layer only.
# Environment: RERANK_IMAGE (the tag), SSL_CERT_FILE (a CA bundle the build stages trust, e.g. a TLS-
# intercepting proxy's; it never reaches the runtime stage), TORCH_CPU_INDEX (where torch+cpu comes from
# when pip cannot find it already).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_VENV:-$ROOT/.venv}"
WORK="$ROOT/var/image"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/podman/containers.conf}"

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)"
UV_VERSION="$(sed -n 's/^ARG UV_VERSION=//p' Containerfile)"
# uv's PyPI wheel for the Containerfile's UV_VERSION (0.13.8), by its sha256 on PyPI.
UV_WHEEL_SHA256=e18a57b8b352eb7c8feb317b9f6f533c8f0ad9673fd6cf34bbe3cf1a9f6a8984
# The CPU base: what the docs name; made here with debootstrap when local storage lacks it.
CPU_BASE=docker.io/library/debian:bookworm-slim
CPU_PYTHON=3.11  # bookworm's python3: the torch wheel must match it
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

for tool in buildah podman; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: scripts/system-deps.sh installs it"
done

have_image() { podman image exists "$1"; }

# A stand-in for a plain tag: debootstrap's minimal bookworm, imported under that tag.
make_base() {
  have_image "$CPU_BASE" && return 0
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: scripts/system-deps.sh installs it"
  say "making $CPU_BASE with debootstrap (about 30 s)"
  local rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $WORK/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$CPU_BASE" >/dev/null
  rm -rf "$rootfs"
}

# The build stages' base: the base plus SSL_CERT_FILE's bundle, when set (a CI-only layer).
make_build_base() {
  local base=$1
  if [ -z "${SSL_CERT_FILE:-}" ]; then
    printf '%s' "$base"
    return 0
  fi
  [ -r "$SSL_CERT_FILE" ] || die "SSL_CERT_FILE=$SSL_CERT_FILE is not readable"
  local digest tag container
  digest="$( (podman image inspect --format '{{.Id}}' "$base"; cat "$SSL_CERT_FILE") | sha256sum | cut -c1-12)"
  tag="localhost/product-rerank-build-base:$digest"
  if ! have_image "$tag"; then
    container="$(buildah from --pull=never "$base")"
    buildah copy "$container" "$SSL_CERT_FILE" /etc/ssl/build-ca.pem >/dev/null
    buildah config --env SSL_CERT_FILE=/etc/ssl/build-ca.pem "$container"
    buildah commit --quiet --rm "$container" "$tag" >/dev/null
  fi
  printf '%s' "$tag"
}

# The Containerfile's `FROM ghcr.io/astral-sh/uv:<version>`: the same binaries, from uv's PyPI wheel.
make_uv() {
  local image="ghcr.io/astral-sh/uv:$UV_VERSION"
  have_image "$image" && return 0
  say "making $image from uv's PyPI wheel"
  local dir="$WORK/uv"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'uv==%s --hash=sha256:%s\n' "$UV_VERSION" "$UV_WHEEL_SHA256" >"$dir/requirements.txt"
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary :all: --require-hashes \
    --platform manylinux_2_17_x86_64 --python-version 3.11 -r "$dir/requirements.txt" -d "$dir" \
    || die "could not download uv $UV_VERSION from PyPI"
  "$VENV/bin/python" -m zipfile -e "$dir"/uv-*.whl "$dir/x"
  local container
  container="$(buildah from scratch)"
  buildah copy --chmod 0755 "$container" "$dir/x/uv-$UV_VERSION.data/scripts/uv" /uv >/dev/null
  buildah copy --chmod 0755 "$container" "$dir/x/uv-$UV_VERSION.data/scripts/uvx" /uvx >/dev/null
  buildah config --entrypoint '["/uv"]' "$container"
  buildah commit --quiet --rm "$container" "$image" >/dev/null
}

# A local package index holding torch's CPU wheel (PyPI has only the CUDA build of torch 2.13.0).
make_torch_index() {
  local dir="$WORK/torch-index/torch"
  local pattern="torch-$TORCH_VERSION+cpu-cp${CPU_PYTHON/./}-*.whl"
  # shellcheck disable=SC2086  # the pattern is meant to glob
  if ! ls "$dir"/$pattern >/dev/null 2>&1; then
    mkdir -p "$dir"
    local download=("$VENV/bin/python" -m pip download --quiet --no-deps --only-binary :all: -d "$dir"
      --platform manylinux_2_28_x86_64 --python-version "$CPU_PYTHON" "torch==$TORCH_VERSION+cpu")
    "${download[@]}" 2>/dev/null || "${download[@]}" --index-url "$TORCH_CPU_INDEX" \
      || die "could not get torch $TORCH_VERSION+cpu (set TORCH_CPU_INDEX to an index that has it)"
  fi
  (cd "$dir" && for wheel in torch-*.whl; do
    printf '<a href="%s">%s</a>\n' "${wheel//+/%2B}" "$wheel"
  done >index.html)
}

# The model, fetched by the model stage as from a hub: the tiny model from a local git-lfs repository, named
# for the model (the served name follows the repository's: qwen3-reranker-tiny).
model_args=()
model_volumes=()
model_source() {
  local model=$1
  if [ "$model" = tiny ]; then
    local snapshot repo revision
    snapshot="$("$VENV/bin/python" -m model_setup tiny "$ROOT/var/models/tiny")"
    repo="$WORK/hub/qwen3-reranker-tiny"
    revision="$("$VENV/bin/python" -m model_setup publish "$snapshot" "$repo")"
    model_args=(--build-arg MODEL_REPO=file:///ci/hub/qwen3-reranker-tiny --build-arg "MODEL_REVISION=$revision")
    model_volumes=(--volume "$WORK/hub:/ci/hub:ro")
  else
    # The revision is resolved here (the pin fetch.py holds, unless MODEL_REVISION gives one), so the image's
    # labels name it: a commit, or a ModelScope tag as given (the manifest inside records its commit);
    # fetch.py checks it again in the build.
    local source="${MODEL_SOURCE:-huggingface}" revision
    revision="$("$VENV/bin/python" - "$model" "$source" "${MODEL_REVISION:-}" <<'EOF'
import sys
from model_setup.fetch import FetchError, resolve_source
try:
    print(resolve_source(sys.argv[1], sys.argv[3] or None, source=sys.argv[2]).revision)
except FetchError as exc:
    sys.exit(f"image: {exc}")
EOF
)" || exit 1
    model_args=(--build-arg "MODEL_REPO=$model" --build-arg "MODEL_SOURCE=$source"
      --build-arg "MODEL_REVISION=$revision" ${HUB_URL:+--build-arg "HUB_URL=$HUB_URL"})
  fi
}

build() {
  local flavour=${1:-} model=${2:-}
  mkdir -p "$WORK"
  local args=(--isolation chroot --layers --pull=never -f Containerfile
    --build-arg "VERSION=$VERSION" --build-arg "VCS_REF=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
  local volumes=() tag
  case "$flavour" in
    cpu)
      tag="${RERANK_IMAGE:-localhost/product-rerank:$VERSION-cpu}"
      make_base
      make_uv
      make_torch_index
      model_source "${model:-tiny}"
      args+=(--build-arg FLAVOUR=cpu --build-arg "BASE_IMAGE=$CPU_BASE"
        --build-arg "BUILD_BASE_IMAGE=$(make_build_base "$CPU_BASE")"
        --build-arg TORCH_INDEX=file:///ci/torch-index "${model_args[@]}")
      volumes=(--volume "$WORK/torch-index:/ci/torch-index:ro" "${model_volumes[@]}")
      ;;
    cuda)
      tag="${RERANK_IMAGE:-localhost/product-rerank:$VERSION}"
      args=("${args[@]/--pull=never/--pull=true}")
      [ -z "$model" ] || { model_source "$model"; args+=("${model_args[@]}"); }
      ;;
    *) die "usage: scripts/image.sh build cpu|cuda [MODEL]" ;;
  esac
  say "building $tag ($flavour); log in $WORK/build-$flavour.log"
  local started=$SECONDS
  if ! buildah bud "${args[@]}" "${volumes[@]}" -t "$tag" . >"$WORK/build-$flavour.log" 2>&1; then
    tail -n 20 "$WORK/build-$flavour.log" >&2
    die "the build failed: see $WORK/build-$flavour.log"
  fi
  say "built $tag in $((SECONDS - started)) s"
  printf '%s\n' "$tag"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  *) die "usage: scripts/image.sh build cpu|cuda [MODEL]" ;;
esac
