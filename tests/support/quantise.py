"""A quantised copy of the tiny model, made as llm-compressor makes one: compressed-tensors' INT8 W8A8 scheme
(weights int8 per output channel, activations int8 per token at run time), every Linear but ``lm_head``.

compressed-tensors is the format library vLLM itself depends on (and llm-compressor writes with), so this
needs no venv of its own. Activations are quantised dynamically, so no calibration data is needed: the
weights' scales are their channels' absolute maxima, which is what llm-compressor's min-max observer
computes for this scheme.

    .venv/bin/python -m tests.support.quantise var/models/tiny var/models/tiny-w8a8
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from model_setup.fetch import MANIFEST_NAME, read_manifest, write_manifest
from model_setup.naming import served_name

SCHEME = "W8A8"  # compressed-tensors' preset: int8 weights (channel), int8 dynamic activations (token)
KEPT = ["lm_head"]  # the score is read from lm_head's yes/no rows: it stays in the source's precision


def write_quantised(source: Path, dest: Path) -> Path:
    """Write the quantised copy of ``source`` into ``dest`` atomically; an existing one is kept."""
    import torch  # noqa: PLC0415  # heavy: only when a copy is made
    from compressed_tensors.compressors import ModelCompressor  # noqa: PLC0415
    from compressed_tensors.quantization import (  # noqa: PLC0415
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    dest = dest.resolve()
    if (dest / MANIFEST_NAME).is_file():
        return dest
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(SCHEME, ["Linear"])},
        ignore=KEPT,
        quantization_status=QuantizationStatus.INITIALIZED,
    )
    apply_quantization_config(model, config)
    with torch.no_grad():
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None:
                continue
            weight = module.weight
            scale, zero_point = calculate_qparams(
                weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True), scheme.weights
            )
            module.weight_scale.copy_(scale)
            module.weight_zero_point.copy_(zero_point)
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)
    model.save_pretrained(tmp, safe_serialization=True)
    compressor.update_config(str(tmp))
    for path in source.iterdir():  # the tokenizer and generation config, as they were
        if path.is_file() and not (tmp / path.name).exists() and path.name != MANIFEST_NAME:
            shutil.copyfile(path, tmp / path.name)
    origin = read_manifest(source)
    write_manifest(
        tmp,
        repo=f"{served_name(source)}-w8a8",  # served as qwen3-reranker-tiny-w8a8
        url="tests.support.quantise",
        revision=f"{origin['revision']}-w8a8",
        tool="tests.support.quantise",
    )
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    print(write_quantised(Path(sys.argv[1]), Path(sys.argv[2])))
