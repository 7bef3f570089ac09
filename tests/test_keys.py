"""API keys as the gateway reads them: a keygen line admits its key and no other, the keygen command prints
the line and the key apart, and a malformed keys file is refused without echoing what it holds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import keys

pytestmark = pytest.mark.unit


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
