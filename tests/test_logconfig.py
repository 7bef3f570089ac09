"""How the gateway's logs are configured (its own and granian's lines through one renderer): tracebacks are
plain text without local variables, in both formats. The request log line itself is in tests/test_logs.py."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_logs_print_plain_tracebacks_without_locals(capsys: pytest.CaptureFixture[str]) -> None:
    import logging  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    from gateway.logconfig import configure_logging  # noqa: PLC0415

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
