#!/bin/sh
# Supervises vLLM (loopback only) and the gateway (public port) in one container.
# Exits when either dies, taking the other down; SIGTERM/SIGINT drain the gateway, then stop vLLM.
set -eu

log() { printf '{"event":"%s","level":"%s","component":"entrypoint"}\n' "$2" "$1"; }
die() { log error "$1"; exit "${2:-64}"; }

: "${RERANK_MODEL_DIR:?RERANK_MODEL_DIR is not set: point it at a verified model snapshot}"
: "${RERANK_DEVICE:=cuda}"
: "${RERANK_VLLM_PORT:=8001}"
: "${RERANK_VLLM_START_TIMEOUT_S:=900}"
: "${RERANK_PYTHON:=python3}"
export RERANK_DEVICE RERANK_VLLM_PORT
export HF_HUB_OFFLINE=1  # the model is always a local snapshot; never reach for a hub at run time
export RERANK_UPSTREAM_URL="http://127.0.0.1:${RERANK_VLLM_PORT}"

[ -f "$RERANK_MODEL_DIR/config.json" ] || die "no model at RERANK_MODEL_DIR=$RERANK_MODEL_DIR (config.json missing)"
[ -f "$RERANK_MODEL_DIR/tokenizer.json" ] || die "no tokenizer.json in RERANK_MODEL_DIR=$RERANK_MODEL_DIR"
if [ -z "${RERANK_API_KEYS:-}" ] && [ -z "${RERANK_API_KEYS_FILE:-}" ]; then
  die "no API keys: set RERANK_API_KEYS_FILE (a mounted file) or RERANK_API_KEYS; make one with: python -m gateway keygen <id>"
fi
if [ -n "${RERANK_API_KEYS_FILE:-}" ] && [ ! -r "$RERANK_API_KEYS_FILE" ]; then
  die "RERANK_API_KEYS_FILE=$RERANK_API_KEYS_FILE is not readable"
fi

vllm_pid=""
gateway_pid=""

stop() {
  trap '' TERM INT
  log info "stopping"
  # The gateway first, so it finishes in-flight requests while vLLM still answers them.
  [ -n "$gateway_pid" ] && kill -TERM "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null || true
  [ -n "$vllm_pid" ] && kill -TERM "$vllm_pid" 2>/dev/null && wait "$vllm_pid" 2>/dev/null || true
}

on_signal() { stop; exit 0; }
trap on_signal TERM INT

"$RERANK_PYTHON" -m model_setup serve &
vllm_pid=$!
log info "vllm_starting"

waited=0
until "$RERANK_PYTHON" -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:${RERANK_VLLM_PORT}/health', timeout=2)" 2>/dev/null; do
  kill -0 "$vllm_pid" 2>/dev/null || { wait "$vllm_pid" || true; die "vLLM exited during start-up" 70; }
  [ "$waited" -ge "$RERANK_VLLM_START_TIMEOUT_S" ] && { stop; die "vLLM not healthy after ${RERANK_VLLM_START_TIMEOUT_S}s" 70; }
  sleep 2
  waited=$((waited + 2))
done
log info "vllm_ready"

"$RERANK_PYTHON" -m gateway serve &
gateway_pid=$!

# Whichever child exits first ends the container: an operator's restart policy does the rest.
while kill -0 "$vllm_pid" 2>/dev/null && kill -0 "$gateway_pid" 2>/dev/null; do
  sleep 1
done
log error "a child process exited; shutting down"
stop
exit 70
