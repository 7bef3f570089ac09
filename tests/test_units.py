"""Pure units: key files, settings validation, token budgets. No servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway import keys
from gateway.settings import Settings
from gateway.tokens import PromptBudget


def test_keygen_line_admits_exactly_its_key() -> None:
    raw, line = keys.generate("shop-1")
    ring = keys.KeyRing(keys.parse(line, source="test"))
    found = ring.authenticate(raw)
    assert found is not None
    assert found.key_id == "shop-1"
    assert ring.authenticate(raw + "x") is None
    assert ring.authenticate("") is None
    assert raw not in line, "the keys file holds a digest, never the key"


def test_keygen_cli_prints_the_line_on_stdout_and_the_key_on_stderr() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "keygen", "shop-7"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("shop-7 sha256:")
    raw = done.stderr.split(": ", 1)[1].split()[0]
    assert keys.KeyRing(keys.parse(done.stdout, source="cli")).authenticate(raw) is not None


@pytest.mark.parametrize(
    "text",
    [
        "shop-1",
        "shop-1 sha256:abc",
        "shop-1 rk_plaintextkey",
        "shop 1 sha256:" + "0" * 64,
        "-bad sha256:" + "0" * 64,
        "shop-1 sha256:" + "G" * 64,
    ],
)
def test_malformed_key_lines_are_rejected_without_echoing_them(text: str) -> None:
    with pytest.raises(ValueError, match="keys line 1: expected") as raised:
        keys.parse(text, source="keys")
    assert text not in str(raised.value)


def test_comments_blank_lines_and_semicolons() -> None:
    digest = "sha256:" + "a" * 64
    parsed = keys.parse(f"# header\n\nshop-1 {digest}  # first\nshop-2 {digest};shop-3 {digest}", source="s")
    assert [key.key_id for key in parsed] == ["shop-1", "shop-2", "shop-3"]


def test_duplicate_ids_and_empty_rings_are_refused() -> None:
    digest = "sha256:" + "a" * 64
    with pytest.raises(ValueError, match="duplicate key ids: shop-1"):
        keys.KeyRing(keys.parse(f"shop-1 {digest}\nshop-1 {digest}", source="s"))
    with pytest.raises(ValueError, match="no API keys"):
        keys.KeyRing([])


def test_settings_validate_at_start(model_dir: Path, tmp_path: Path) -> None:
    keyline = keys.generate("a")[1]
    ok = Settings(model_dir=model_dir, api_keys=keyline, model_aliases="x, y,,z")  # type: ignore[arg-type]
    assert ok.model_aliases == ("x", "y", "z")
    assert ok.model_names[0] == "qwen3-reranker-4b"
    with pytest.raises(ValidationError, match="no API keys configured"):
        Settings(model_dir=model_dir)
    with pytest.raises(ValidationError, match=r"has no tokenizer\.json"):
        Settings(model_dir=tmp_path, api_keys=keyline)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"less than or equal to 10000"):
        Settings(model_dir=model_dir, api_keys=keyline, max_documents=10_001)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at most half of max_model_len"):
        Settings(model_dir=model_dir, api_keys=keyline, max_model_len=1024, max_query_tokens=600)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def budget(model_dir: Path) -> PromptBudget:
    return PromptBudget.from_model_dir(model_dir, max_model_len=2048)


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])
    | st.sampled_from(["耳", " ", "\n", "é", "\U0001d160", "\U00013000"]),
    max_size=400,
)


@settings(max_examples=200, deadline=None)
@given(text=texts, chunk_tokens=st.integers(1, 64), max_chunks=st.integers(1, 5))
def test_split_pieces_are_consecutive_bounded_prefixes(
    budget: PromptBudget, text: str, chunk_tokens: int, max_chunks: int
) -> None:
    """Chunks concatenate to a prefix of the text (the whole text when it fits), each within the budget
    up to edge re-merging, and there are never more than asked for."""
    pieces = budget.split([text], chunk_tokens=chunk_tokens, max_chunks=max_chunks)[0]
    assert 1 <= len(pieces) <= max_chunks
    assert all(pieces) or pieces == [""], "no empty piece is ever sent to the model"
    joined = "".join(pieces)
    assert text.startswith(joined)
    total = budget.count(text)
    if total <= chunk_tokens * max_chunks:
        assert joined == text
    for piece in pieces:
        assert budget.count(piece) <= chunk_tokens + 4


def test_document_budget_leaves_room_for_the_prompt(budget: PromptBudget) -> None:
    short = budget.document_budget("Find shoes", "red")
    long = budget.document_budget("Find shoes", "red " * 100)
    assert 1900 < short < 2048
    assert long < short - 90


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RERANK_API_KEYS": "shop sha256:" + "a" * 64}, "RERANK_MODEL_DIR: Field required"),
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
    if "RERANK_MODEL_DIR: Field required" not in message:
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


def test_texts_that_grow_under_nfc_are_still_cut_to_the_budget(budget: PromptBudget) -> None:
    """U+1D160 is 4 UTF-8 bytes but 6 tokens after NFC: the no-tokenizing shortcut must not trust bytes."""
    text = "\U0001d160" * 1000
    assert len(text.encode()) == 4000
    (piece,) = budget.split([text], chunk_tokens=4096, max_chunks=1)[0]
    assert budget.count(piece) <= 4096 + 4


def test_logs_print_plain_tracebacks_without_locals(capsys: pytest.CaptureFixture[str]) -> None:
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    from gateway.requestlog import configure_logging  # noqa: PLC0415

    try:
        for json in (False, True):
            configure_logging(level="info", json=json)
            secret = "Bearer rk_must_not_be_logged"  # a local variable a rich traceback would show
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                logging.getLogger("granian").exception("worker failed")
                structlog.get_logger("gateway").exception("unhandled_error")
            out = capsys.readouterr().out
            assert secret not in out
            assert "RuntimeError: boom" in out
            assert "traceback object at" not in out
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_a_client_hanging_up_mid_upload_is_a_499_not_a_500(model_dir: Path) -> None:
    """Litestar reports the disconnect as a server error; we log it as the client's doing."""
    import asyncio  # noqa: PLC0415

    from gateway.app import create_app  # noqa: PLC0415

    raw, line = keys.generate("k")
    app = create_app(Settings(model_dir=model_dir, api_keys=line, upstream_url="http://127.0.0.1:9"))  # type: ignore[arg-type]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/rerank", "raw_path": b"/v1/rerank", "query_string": b"", "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {raw}".encode()),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    events = iter(
        [{"type": "http.request", "body": b'{"query": "q", ', "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict[str, object]] = []

    async def receive() -> object:
        return next(events)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 499
