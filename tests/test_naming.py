"""The served name follows the model actually served: one rule (model_setup/naming.py) that vLLM's options,
the gateway's settings and the entrypoint's ``served-name`` read, and the size check the chart relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway import keys
from gateway.settings import Settings
from model_setup import fetch, naming
from model_setup.serving import VllmOptions
from tests.support.procs import ROOT

pytestmark = pytest.mark.unit


def snapshot(directory: Path, repo: str) -> Path:
    """A directory with a manifest naming ``repo`` (the name rule reads nothing else)."""
    directory.mkdir(parents=True)
    (directory / "tokenizer.json").write_text("{}")
    fetch.write_manifest(
        directory, repo=repo, url=f"https://example.invalid/{repo}", revision="a" * 40, tool="test"
    )
    return directory


@pytest.mark.parametrize(
    ("repo", "name"),
    [
        ("Qwen/Qwen3-Reranker-0.6B", "qwen3-reranker-0.6b"),
        ("Qwen/Qwen3-Reranker-4B", "qwen3-reranker-4b"),
        ("8b", "qwen3-reranker-8b"),
        ("tiny", "qwen3-reranker-tiny"),
        ("https://www.modelscope.cn/models/Qwen/Qwen3-Reranker-4B.git", "qwen3-reranker-4b"),
        ("file:///ci/hub/qwen3-reranker-tiny", "qwen3-reranker-tiny"),
        ("https://hub.example/Shop/Reranker FT (v2)/", "reranker-ft-v2"),
    ],
)
def test_the_name_is_the_repository_lower_cased(repo: str, name: str) -> None:
    assert naming.model_name(repo) == name


def test_every_size_has_its_name() -> None:
    assert {size: naming.model_name(size) for size in fetch.SIZES} == {
        "0.6b": "qwen3-reranker-0.6b",
        "4b": "qwen3-reranker-4b",
        "8b": "qwen3-reranker-8b",
    }


def test_vllm_and_the_gateway_name_the_tiny_model_alike(model_dir: Path) -> None:
    """Unset, both sides take the snapshot's name; the tiny model no longer answers as the 4B."""
    options = VllmOptions.from_env({"RERANK_MODEL_DIR": str(model_dir)})
    assert options.served_model_name == "qwen3-reranker-tiny"
    assert options.args()[options.args().index("--served-model-name") + 1] == "qwen3-reranker-tiny"
    settings = Settings(model_dir=model_dir, api_keys=SecretStr(keys.generate("a")[1]))
    assert settings.fleet().default == "qwen3-reranker-tiny"
    assert "rerank-v3.5" in settings.model_aliases  # aliases still answer


def test_an_explicit_name_wins_and_empty_means_unset(model_dir: Path) -> None:
    env = {"RERANK_MODEL_DIR": str(model_dir), "RERANK_SERVED_MODEL_NAME": "search-ranker"}
    assert VllmOptions.from_env(env).served_model_name == "search-ranker"
    assert (
        VllmOptions.from_env({**env, "RERANK_SERVED_MODEL_NAME": ""}).served_model_name
        == "qwen3-reranker-tiny"
    )
    key = SecretStr(keys.generate("a")[1])
    assert Settings(
        model_dir=model_dir, api_keys=key, served_model_name="search-ranker"
    ).served_model_name == ("search-ranker")


def test_a_snapshot_without_a_manifest_needs_an_explicit_name(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(
        ValueError, match=r"RERANK_SERVED_MODEL_NAME is unset and .* has no \.rerank-model\.json"
    ):
        VllmOptions.from_env({"RERANK_MODEL_DIR": str(tmp_path)})
    with pytest.raises(
        ValueError, match=r"RERANK_SERVED_MODEL_NAME is unset and .* has no manifest naming its model"
    ):
        Settings(model_dir=tmp_path, api_keys=SecretStr(keys.generate("a")[1]))


def served_name(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    return subprocess.run(
        [sys.executable, "-m", "model_setup", "served-name", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_served_name_command(tmp_path: Path) -> None:
    """What the entrypoint runs: the snapshot's name, or with --size a refusal of another model."""
    model = snapshot(tmp_path / "m", "Qwen/Qwen3-Reranker-0.6B")
    assert served_name(str(model)).stdout == "qwen3-reranker-0.6b\n"
    assert served_name("--size", "0.6b", str(model)).stdout == "qwen3-reranker-0.6b\n"
    wrong = served_name("--size", "4b", str(model))
    assert wrong.returncode == 1
    assert wrong.stdout == ""
    assert wrong.stderr.splitlines() == [
        f"model_setup served-name: error: {model} holds Qwen/Qwen3-Reranker-0.6B, not the 4b model "
        "(Qwen/Qwen3-Reranker-4B) the size declares: declare the size of the model the image holds (the "
        "chart's model.size), or none"
    ]
    assert "must be one of 0.6b, 4b, 8b, not '3b'" in served_name("--size", "3b", str(model)).stderr
    assert served_name("--repo", "8b").stdout == "qwen3-reranker-8b\n"
    assert "has no .rerank-model.json" in served_name(str(tmp_path)).stderr


def test_a_size_matches_a_mirror_that_keeps_the_name(tmp_path: Path) -> None:
    """The 4B fetched from ModelScope (or a mirror URL) is still the 4B."""
    model = snapshot(tmp_path / "m", "https://www.modelscope.cn/models/Qwen/Qwen3-Reranker-4B.git")
    naming.check_size(model, "4b")
    with pytest.raises(fetch.FetchError, match="not the 8b model"):
        naming.check_size(model, "8b")
