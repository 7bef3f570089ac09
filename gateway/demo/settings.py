"""The page's settings: RERANK_DEMO_* variables, overridden by command-line options.

Secrets (the API key, the page's password) come from files or the environment, never from the command
line, where other users of the machine could read them in the process list.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_setup.prompt import PRODUCT_SEARCH_INSTRUCTION

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RERANK_DEMO_", extra="forbid")

    base_url: str = "http://127.0.0.1:8000"  # the gateway, as a shop would reach it
    api_key_file: Path | None = None  # holds the raw key (rk_...), as the client would keep it
    api_key: SecretStr | None = None  # for containers that pass secrets as variables
    # The page is a client and cannot read the gateway's RERANK_DEFAULT_INSTRUCTION: it shows this
    # (scripts/run.sh passes the deployment's value) and falls back to the default the gateway ships with.
    instruction: str = PRODUCT_SEARCH_INSTRUCTION
    host: str = "127.0.0.1"  # loopback unless asked: the page spends a real key
    port: int = Field(default=7860, ge=1, le=65535)
    username: str = "demo"
    password_file: Path | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def read_api_key(self) -> str:
        """The raw key, or ValueError with a sentence saying what to fix."""
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read the API key file {self.api_key_file}: {exc.strerror}"
                ) from None
        elif self.api_key is not None:
            text = self.api_key.get_secret_value().strip()
        else:
            raise ValueError("no API key: pass --api-key-file (a file holding the raw key, rk_...)")
        if not text or len(text.split()) != 1:
            # A keys file holds "<key-id> sha256:<digest>" lines: the gateway's side, not a client's key.
            raise ValueError("the API key file must hold exactly one raw key (rk_...), not a keys-file line")
        return text

    def read_password(self) -> str | None:
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ValueError(
                    f"cannot read the password file {self.password_file}: {exc.strerror}"
                ) from None
        return self.password.get_secret_value() if self.password is not None else None

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK or self.host.startswith("127.")


def password_check(username: str, password: str) -> Callable[[str, str], bool]:
    """Gradio's ``auth`` callable: constant-time comparison of both parts."""

    def check(given_user: str, given_password: str) -> bool:
        user_ok = hmac.compare_digest(given_user.encode(), username.encode())
        password_ok = hmac.compare_digest(given_password.encode(), password.encode())
        return user_ok and password_ok

    return check
