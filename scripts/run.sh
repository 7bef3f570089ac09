#!/usr/bin/env bash
# Set up and serve: vLLM plus the gateway on http://localhost:${RERANK_PORT:-8000}.
#   scripts/run.sh tiny             the tiny random-weight test model (ranks randomly; for trying the API)
#   scripts/run.sh /path/to/model   a local Qwen3-Reranker snapshot directory
# Uses the GPU when nvidia-smi sees one, else vLLM on CPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_VENV:-$ROOT/.venv}"
MODEL="${1:-tiny}"
cd "$ROOT"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  flavour=gpu; export RERANK_DEVICE="${RERANK_DEVICE:-cuda}"
else
  flavour=cpu; export RERANK_DEVICE=cpu
fi
scripts/setup.sh "$flavour"

case "$MODEL" in
  tiny)
    export RERANK_MODEL_DIR="$("$VENV/bin/python" -m model_setup tiny var/models/tiny)"
    echo "run: serving the tiny test model: random weights, so rankings are random" >&2
    ;;
  *)
    [ -d "$MODEL" ] || { echo "run: '$MODEL' is not a directory (give a local snapshot or 'tiny')" >&2; exit 2; }
    export RERANK_MODEL_DIR="$(cd "$MODEL" && pwd)"
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
