"""API keys: stored as SHA-256 digests, each with a non-secret id for logs; compared in constant time.

Keys are 256-bit random strings, so a fast hash is enough (no password-style KDF is needed): nobody can
brute-force the preimage, and the digest on disk is useless to a reader of the keys file.

File format, one key a line (``#`` starts a comment), limits optional::

    <key-id> sha256:<64 hex digits> [rpm=N|none] [units_per_minute=N|none] [concurrency=N|none] [cache=on|off]
        [fusion=<field>:<weight>,... [fusion_normalize=minmax|none] [fusion_missing=<number>]]

A limit left out takes the deployment default (RERANK_DEFAULT_*); ``none`` lifts it for that key.
``cache=off`` keeps the key's requests out of the score cache (neither read nor written).
``fusion=...`` is the key's default score fusion (gateway/fusion.py) for v1 requests of object documents.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from gateway.fusion import FusionSpec, parse_key_options
from gateway.limits import MAX_PER_MINUTE, KeyLimits

KEY_PREFIX = "rk_"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
LIMIT_OPTIONS = tuple(f.name for f in fields(KeyLimits))  # rpm, units_per_minute, concurrency


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    digest: bytes
    limits: dict[str, int | None] = field(default_factory=dict)  # only those the line sets
    cache: bool = True
    fusion: FusionSpec | None = None  # the key's default fusion, for requests that send none

    def effective_limits(self, defaults: KeyLimits) -> KeyLimits:
        """The deployment defaults, overridden by whatever this key's line sets."""
        return replace(defaults, **self.limits)


def digest(raw_key: str) -> bytes:
    return hashlib.sha256(raw_key.encode()).digest()


def generate(key_id: str) -> tuple[str, str]:
    """A new key and the keys-file line that admits it."""
    if not _ID_RE.match(key_id):
        raise ValueError("key id must be 1-64 characters of A-Z a-z 0-9 . _ - and start alphanumeric")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    return raw, f"{key_id} sha256:{digest(raw).hex()}"


def parse(text: str, *, source: str) -> list[ApiKey]:
    """Parse key lines. Errors name the source and line number, never the line (it may hold a raw key)."""
    keys: list[ApiKey] = []
    for number, line in enumerate(text.replace(";", "\n").splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2 or not _ID_RE.match(fields[0]) or not _DIGEST_RE.match(fields[1]):
            raise ValueError(
                f"{source} line {number}: expected '<key-id> sha256:<64 lowercase hex> [limit=N ...]' "
                "(make one with `python -m gateway keygen <key-id>`)"
            )
        limits: dict[str, int | None] = {}
        cache = True
        fusion_options: dict[str, str] = {}
        for option in fields[2:]:
            name, _, value = option.partition("=")
            if name == "cache" and value in ("on", "off"):
                cache = value == "on"
                continue
            if name.startswith("fusion"):
                fusion_options[name] = value
                continue
            if name not in LIMIT_OPTIONS or not (
                value == "none" or (value.isdigit() and 0 < int(value) <= MAX_PER_MINUTE)
            ):
                raise ValueError(
                    f"{source} line {number}: limits are {', '.join(n + '=N|none' for n in LIMIT_OPTIONS)} "
                    f"with N from 1 to {MAX_PER_MINUTE}, cache=on|off and fusion=<field>:<weight>,..."
                )
            limits[name] = None if value == "none" else int(value)
        try:
            fusion = parse_key_options(fusion_options)
        except ValueError as exc:
            raise ValueError(f"{source} line {number}: {exc}") from None
        key_digest = bytes.fromhex(fields[1].removeprefix("sha256:"))
        keys.append(ApiKey(fields[0], key_digest, limits, cache, fusion))
    return keys


class KeyRing:
    """The configured keys. ``authenticate`` costs the same whichever key (if any) matches."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)
        ids = [key.key_id for key in self._keys]
        duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if duplicates:
            raise ValueError(f"duplicate key ids: {', '.join(duplicates)}")
        if not self._keys:
            raise ValueError("no API keys configured")

    @classmethod
    def load(cls, *, file: Path | None, env_value: str | None) -> KeyRing:
        keys: list[ApiKey] = []
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read API keys file {file}: {exc.strerror}") from None
            keys += parse(text, source=str(file))
        if env_value:
            keys += parse(env_value, source="RERANK_API_KEYS")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, raw_key: str) -> ApiKey | None:
        presented = digest(raw_key)
        found: ApiKey | None = None
        for key in self._keys:  # no early exit: timing does not depend on which key matched
            if hmac.compare_digest(presented, key.digest):
                found = key
        return found
