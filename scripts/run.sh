#!/usr/bin/env bash
# Set up and serve: vLLM plus the gateway on http://localhost:${RERANK_PORT:-8000}.
#   scripts/run.sh                  the 4b model on a GPU host, 0.6b on CPU, fetched once with git-lfs at a
#                                   pinned revision into var/models/
#   scripts/run.sh 0.6b|4b|8b       a size: Qwen/Qwen3-Reranker-0.6B, -4B or -8B, each at its pinned revision
#   scripts/run.sh Qwen/Qwen3-Reranker-0.6B   a hub repository (MODEL_REVISION=<sha> for unpinned ones)
#   MODEL_SOURCE=modelscope MODEL_REVISION=<sha or tag> scripts/run.sh 4b
#                                   from ModelScope instead of Hugging Face (its own commits: no pins yet)
#   scripts/run.sh /path/to/model   a snapshot directory written by `python -m model_setup fetch`
#   scripts/run.sh tiny             the tiny random-weight test model (ranks randomly; for trying the API)
#   scripts/run.sh tiny-fleet       two tiny models (other seeds, so they rank differently) and a cascade
#                                   over them, from one gateway: a fleet to try offline (docs/fleet.md)
# The API answers under the model's own name (qwen3-reranker-0.6b, qwen3-reranker-tiny, ...) unless
# RERANK_SERVED_MODEL_NAME says otherwise. Uses the GPU when nvidia-smi sees one, else vLLM on CPU. Starts
# the try-it page on http://127.0.0.1:${RERANK_DEMO_PORT:-7860} next to it (RERANK_DEMO=off: not).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_VENV:-$ROOT/.venv}"
cd "$ROOT"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  flavour=gpu; export RERANK_DEVICE="${RERANK_DEVICE:-cuda}"
else
  flavour=cpu; export RERANK_DEVICE=cpu
fi
scripts/setup.sh "$flavour"

if [ "$flavour" = gpu ]; then default_model=4b; else default_model=0.6b; fi
MODEL="${1:-$default_model}"
# Each step that can fail stops here with one line saying what to do (`export VAR="$(cmd)"` would hide
# the failure from set -e and carry on).
die() { echo "run: $*" >&2; exit 1; }
case "$MODEL" in
  tiny)
    RERANK_MODEL_DIR="$("$VENV/bin/python" -m model_setup tiny var/models/tiny)" \
      || die "could not write the tiny test model (error above)"
    echo "run: serving the tiny test model: random weights, so rankings are random" >&2
    ;;
  tiny-fleet)
    small="$("$VENV/bin/python" -m model_setup tiny --seed 1 var/models/tiny-seed1)" \
      || die "could not write the tiny test models (error above)"
    large="$("$VENV/bin/python" -m model_setup tiny var/models/tiny)" \
      || die "could not write the tiny test models (error above)"
    mkdir -p var/run
    # Both local: the entrypoint starts a vLLM for each, on RERANK_VLLM_PORT and the port after it.
    cat > var/run/tiny-fleet.toml <<EOF
# scripts/run.sh tiny-fleet: two random-weight tiny models and a cascade over them (docs/fleet.md)
default = "tiny-large"

[[models]]
name = "tiny-small"
aliases = ["small"]
model_dir = "$small"

[[models]]
name = "tiny-large"
aliases = ["large"]
model_dir = "$large"

[[cascades]]
name = "tiny-cascade"
aliases = ["cascade"]
first = "tiny-small"
second = "tiny-large"
top_k = 5
max_top_k = 50
EOF
    export RERANK_FLEET_FILE="$ROOT/var/run/tiny-fleet.toml"
    unset RERANK_MODEL_DIR
    echo "run: serving a fleet of two tiny test models and a cascade (var/run/tiny-fleet.toml): random weights, so rankings are random" >&2
    ;;
  *)
    if [ -d "$MODEL" ]; then
      RERANK_MODEL_DIR="$(cd "$MODEL" && pwd)"
    elif name="$("$VENV/bin/python" -m model_setup served-name --repo "$MODEL")"; then
      # A size or a hub name: var/models/<the name it is served as>, one directory per source.
      source="${MODEL_SOURCE:-${RERANK_MODEL_SOURCE:-huggingface}}"
      dest="var/models/$name"
      [ "$source" = huggingface ] || dest="var/models/$source/$name"
      # Same code as the image build: pinned revision, LFS checks, verified manifest. A second run re-verifies.
      RERANK_MODEL_DIR="$("$VENV/bin/python" -m model_setup fetch --repo "$MODEL" --source "$source" \
        ${MODEL_REVISION:+--revision "$MODEL_REVISION"} "$dest")" \
        || die "could not fetch $MODEL (error above); to try the API offline: ./scripts/run.sh tiny"
    else
      echo "run: '$MODEL' is neither 'tiny', 'tiny-fleet', a directory, a size nor a hub repository (owner/name)" >&2
      exit 2
    fi
    ;;
esac
[ -z "${RERANK_MODEL_DIR:-}" ] || export RERANK_MODEL_DIR

demo_key="${RERANK_DEMO_API_KEY_FILE:-}"
if [ -z "${RERANK_API_KEYS:-}" ] && [ -z "${RERANK_API_KEYS_FILE:-}" ]; then
  mkdir -p var/run
  export RERANK_API_KEYS_FILE="$ROOT/var/run/keys"
  if [ ! -s "$RERANK_API_KEYS_FILE" ]; then
    "$VENV/bin/python" -m gateway keygen local-dev > "$RERANK_API_KEYS_FILE"
  else
    echo "run: using the keys in $RERANK_API_KEYS_FILE (delete it to make a new key)" >&2
  fi
  # The demo page is a client with a key of its own: the raw key in a file only we read, its digest
  # beside the others. Made once, like the local-dev key.
  if [ -z "$demo_key" ]; then
    demo_key="$ROOT/var/run/demo-key"
    if [ ! -s "$demo_key" ] || ! grep -q '^demo-page ' "$RERANK_API_KEYS_FILE"; then
      (umask 077 && "$VENV/bin/python" - "$demo_key" >> "$RERANK_API_KEYS_FILE") <<'EOF' \
        || die "could not make the demo page's key"
import pathlib, sys
from gateway.keys import generate
raw, line = generate("demo-page")
pathlib.Path(sys.argv[1]).write_text(raw + "\n")
print(line)
EOF
    fi
  fi
fi
[ "$RERANK_DEVICE" = cpu ] && export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
export RERANK_PYTHON="$VENV/bin/python"
# Metrics (per-key usage) on loopback for a local run: http://127.0.0.1:9090/metrics.
export RERANK_METRICS_HOST="${RERANK_METRICS_HOST:-127.0.0.1}"

# The try-it page (gateway/demo) next to the gateway, on loopback: a client like any shop, so it says
# "not ready" until the model has loaded. RERANK_DEMO=off skips it. entrypoint.sh replaces this shell
# (same PID), so a watcher stops the page when the entrypoint exits.
if [ "${RERANK_DEMO:-on}" != off ]; then
  if [ -n "$demo_key" ]; then
    demo_port="${RERANK_DEMO_PORT:-7860}"
    mkdir -p var/run
    "$VENV/bin/python" -m gateway.demo --base-url "http://127.0.0.1:${RERANK_PORT:-8000}" \
      --api-key-file "$demo_key" --port "$demo_port" \
      ${RERANK_DEFAULT_INSTRUCTION:+--instruction "$RERANK_DEFAULT_INSTRUCTION"} > var/run/demo.log 2>&1 &
    demo_pid=$!
    ( while kill -0 "$$" 2>/dev/null; do sleep 2; done; kill "$demo_pid" 2>/dev/null ) &
    echo "run: try it in a browser at http://127.0.0.1:$demo_port (key demo-page in $demo_key; log in var/run/demo.log)" >&2
  else
    echo "run: no demo page: set RERANK_DEMO_API_KEY_FILE to a file holding one of your raw keys" >&2
  fi
fi
exec ./entrypoint.sh
