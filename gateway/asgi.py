"""ASGI entry for the server's worker processes: each builds its settings from the environment, which
`python -m gateway serve` validated once before starting them (gateway/__main__.py)."""

from __future__ import annotations

from litestar import Litestar

from gateway.app import create_app
from gateway.logconfig import configure_logging
from gateway.settings import Settings


def app_from_env() -> Litestar:
    """Factory the server calls in each worker (``factory=True``); never runs at import."""
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.log_format == "json")
    return create_app(settings)
