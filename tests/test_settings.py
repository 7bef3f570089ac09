"""Settings are validated once, at start: a bad value or a missing key file stops the gateway with one clear
line (exit 2), never a traceback, and never echoes a line that may hold a key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway import keys
from gateway.__main__ import settings_tables
from gateway.settings import Settings
from model_setup import defaults
from model_setup.serving import VllmOptions

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


def test_settings_validate_at_start(model_dir: Path, tmp_path: Path) -> None:
    keyline = keys.generate("a")[1]
    ok = Settings(model_dir=model_dir, api_keys=keyline, model_aliases="x, y,,z")  # type: ignore[arg-type]
    assert ok.model_aliases == ("x", "y", "z")
    assert ok.fleet().default == "qwen3-reranker-tiny"  # the snapshot's name (tests/test_naming.py)
    with pytest.raises(ValidationError, match="no API keys configured"):
        Settings(model_dir=model_dir)
    with pytest.raises(ValidationError, match=r"has no tokenizer\.json"):
        Settings(model_dir=tmp_path, api_keys=keyline)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"less than or equal to 10000"):
        Settings(model_dir=model_dir, api_keys=keyline, max_documents=10_001)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at most half of max_model_len"):
        Settings(model_dir=model_dir, api_keys=keyline, max_model_len=1024, max_query_tokens=600)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RERANK_API_KEYS": "shop sha256:" + "a" * 64},
            "no model: set RERANK_MODEL_DIR (one model) or RERANK_FLEET_FILE",
        ),
        ({"RERANK_API_KEYS": "not-a-key-line"}, "RERANK_API_KEYS line 1: expected"),
        ({"RERANK_API_KEYS_FILE": "/nonexistent/keys"}, "cannot read API keys file /nonexistent/keys"),
        ({"RERANK_API_KEYS": "shop sha256:" + "a" * 64, "RERANK_PORT": "0"}, "RERANK_PORT:"),
        ({}, "no API keys configured"),
    ],
)
def test_bad_configuration_stops_the_server_with_one_clear_line(
    model_dir: Path, env: dict[str, str], message: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RERANK_")}
    if "no model: set RERANK_MODEL_DIR" not in message:
        base["RERANK_MODEL_DIR"] = str(model_dir)
    done = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "not-a-key-line" not in done.stderr, "a bad line may hold a key: never echoed"


# --- documented from the code ---------------------------------------------------------------------------

# Read by the program for itself, never set by an operator: in no table on purpose.
INTERNAL = {
    "RERANK_PYTHON": "the entrypoint's interpreter (the image and the tests set it)",
    "RERANK_METRICS_DIR": "set by `serve` for its workers",
    "RERANK_WORKERS_STATE_FILE": "set by `serve` for its workers",
    "RERANK_VLLM_HOST": "the entrypoint keeps vLLM on loopback",
    "RERANK_FETCH_TOKEN": "set by fetch for git's credential helper, from --token-file or HF_TOKEN",
}
# Variables of the API's clients and of model fetching: documented in their own README sections.
ELSEWHERE = ("RERANK_DEMO", "RERANK_EVAL_API_KEY", "RERANK_HUB_URL", "RERANK_MODEL_SOURCE")


def _readme_tables() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    tables = []
    for _ in range(2):
        start = section.index("| variable | default | meaning |")
        end = section.index("\n\n", start) + 1
        tables.append(section[start:end])
        section = section[end:]
    return tables


def test_the_readme_tables_are_the_ones_the_code_prints() -> None:
    """Both configuration tables come from the code (Settings' descriptions, model_setup/defaults.py): a
    setting missing from either side, or a default or meaning changed on one side only, fails here.
    ``python -m gateway settings`` prints what the README should say."""
    gateway_table, container_table = settings_tables()
    readme_gateway, readme_container = _readme_tables()
    assert readme_gateway == gateway_table
    assert readme_container == container_table


def test_every_setting_says_what_it_means() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not (info.description or "").strip()]
    assert missing == []


def test_every_variable_the_container_reads_is_documented_or_declared_internal() -> None:
    """Every RERANK_* name in the gateway, model_setup and the entrypoint is in a README table, is one of
    the few internal ones, or belongs to a client's section."""
    sources = [
        ROOT / "entrypoint.sh",
        *(ROOT / "model_setup").glob("*.py"),
        *(ROOT / "gateway").rglob("*.py"),
    ]
    read = {name for path in sources for name in re.findall(r"RERANK_[A-Z0-9_]*[A-Z0-9]", path.read_text())}
    tables = "".join(_readme_tables())
    documented = set(re.findall(r"`(RERANK_[A-Z0-9_]+)`", tables))
    undocumented = {name for name in read - documented - INTERNAL.keys() if not name.startswith(ELSEWHERE)}
    # Prefixes in code (RERANK_DEFAULT_ for a family) are not variables.
    undocumented = {name for name in undocumented if not any(d.startswith(name + "_") for d in documented)}
    assert undocumented == set()
    readme = (ROOT / "README.md").read_text()
    assert [name for name in ELSEWHERE if name not in readme] == []
    assert not INTERNAL.keys() & documented


def test_vllm_options_and_the_entrypoint_take_their_defaults_from_one_place(model_dir: Path) -> None:
    """VllmOptions' defaults are model_setup/defaults.py's (the served name the snapshot's, as the gateway's:
    tests/test_naming.py); the entrypoint writes no default of its own but the interpreter it reads the
    others with."""
    options = VllmOptions.from_env({"RERANK_MODEL_DIR": str(model_dir)})
    assert (
        options.port,
        options.device,
        options.dtype,
        options.max_model_len,
    ) == (
        defaults.VLLM_PORT,
        defaults.DEVICE,
        defaults.DTYPE,
        defaults.MAX_MODEL_LEN,
    )
    assert Settings.model_fields["port"].default == defaults.PORT
    assert Settings.model_fields["drain_timeout_s"].default == defaults.DRAIN_TIMEOUT_S
    script = (ROOT / "entrypoint.sh").read_text()
    assert re.findall(r"\$\{(RERANK_[A-Z_]+):=", script) == ["RERANK_PYTHON"]
    printed = subprocess.run(
        [sys.executable, "-m", "model_setup", "defaults"], capture_output=True, text=True, check=True
    ).stdout
    assigned = dict(re.findall(r'^: "\$\{([A-Z_]+):=([^}]*)\}"$', printed, flags=re.MULTILINE))
    assert assigned["RERANK_PORT"] == str(defaults.PORT)
    assert assigned["RERANK_VLLM_PORT"] == str(defaults.VLLM_PORT)
    assert assigned["RERANK_DEVICE"] == defaults.DEVICE
    assert len(assigned) == len(printed.splitlines())  # nothing but assignments for the shell to evaluate
