#!/usr/bin/env bash
# Set up and serve: vLLM plus the gateway on http://localhost:${RERANK_PORT:-8000}.
#   scripts/run.sh                  Qwen/Qwen3-Reranker-4B on a GPU host, Qwen/Qwen3-Reranker-0.6B on CPU,
#                                   fetched once with git-lfs at a pinned revision into var/models/
#   scripts/run.sh Qwen/Qwen3-Reranker-0.6B   a hub repository (MODEL_REVISION=<sha> for unpinned ones)
#   scripts/run.sh /path/to/model   a snapshot directory written by `python -m model_setup fetch`
#   scripts/run.sh tiny             the tiny random-weight test model (ranks randomly; for trying the API)
# Uses the GPU when nvidia-smi sees one, else vLLM on CPU.
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

if [ "$flavour" = gpu ]; then default_model=Qwen/Qwen3-Reranker-4B; else default_model=Qwen/Qwen3-Reranker-0.6B; fi
MODEL="${1:-$default_model}"
case "$MODEL" in
  tiny)
    export RERANK_MODEL_DIR="$("$VENV/bin/python" -m model_setup tiny var/models/tiny)"
    echo "run: serving the tiny test model: random weights, so rankings are random" >&2
    ;;
  *)
    if [ -d "$MODEL" ]; then
      export RERANK_MODEL_DIR="$(cd "$MODEL" && pwd)"
    elif [[ "$MODEL" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
      name="$(basename "$MODEL" | tr '[:upper:]' '[:lower:]')"
      # Same code as the image build: pinned revision, LFS checks, verified manifest. A second run re-verifies.
      export RERANK_MODEL_DIR="$("$VENV/bin/python" -m model_setup fetch --repo "$MODEL" \
        ${MODEL_REVISION:+--revision "$MODEL_REVISION"} "var/models/$name")"
      export RERANK_SERVED_MODEL_NAME="${RERANK_SERVED_MODEL_NAME:-$name}"
    else
      echo "run: '$MODEL' is neither 'tiny', a hub repository (owner/name) nor a directory" >&2
      exit 2
    fi
    ;;
esac

if [ -z "${RERANK_API_KEYS:-}" ] && [ -z "${RERANK_API_KEYS_FILE:-}" ]; then
  mkdir -p var/run
  export RERANK_API_KEYS_FILE="$ROOT/var/run/keys"
  if [ ! -s "$RERANK_API_KEYS_FILE" ]; then
    "$VENV/bin/python" -m gateway keygen local-dev > "$RERANK_API_KEYS_FILE"
  else
    echo "run: using the keys in $RERANK_API_KEYS_FILE (delete it to make a new key)" >&2
  fi
fi
[ "$RERANK_DEVICE" = cpu ] && export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
export RERANK_PYTHON="$VENV/bin/python"
exec ./entrypoint.sh
