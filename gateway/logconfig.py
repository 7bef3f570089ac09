"""Logging configuration: structlog for the gateway's own lines, and the stdlib loggers (granian, httpx,
litestar, the worker supervisor) rendered through the same processors, so every line has one shape."""

from __future__ import annotations

import logging
import sys

import structlog

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    # Tracebacks as plain text, for stdlib records too: never a rich traceback that prints local
    # variables (an ASGI scope holds the Authorization header).
    structlog.processors.format_exc_info,
]


_STDLIB_EXTRAS = ("worker", "pid", "exit_code", "lived_s", "respawn_in_s", "crash_loop")


def _renderer(json: bool) -> structlog.typing.Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)


def stdlib_formatter(json: bool = True) -> logging.Formatter:
    """Renders stdlib records (granian, httpx, litestar) exactly like our own lines.

    Also named by the server's logging dictConfig (``"()": "gateway.logconfig.stdlib_formatter"``).
    """
    return structlog.stdlib.ProcessorFormatter(
        # Only the fields gateway.workers passes: other libraries' extras could carry anything.
        foreign_pre_chain=[*_SHARED, structlog.stdlib.ExtraAdder(allow=_STDLIB_EXTRAS)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _renderer(json)],
    )


def server_log_config(*, level: str, json: bool) -> dict[str, object]:
    """dictConfig for the ASGI server's own loggers, so its start/stop lines share our format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": "gateway.logconfig.stdlib_formatter", "json": json}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "_granian": {"handlers": ["stdout"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
            "gateway.workers": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        },
    }


def configure_logging(*, level: str, json: bool) -> None:
    """structlog for our lines; the stdlib root logger routed through the same renderer."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*_SHARED, _renderer(json)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(stdlib_formatter(json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # httpx logs every request URL at INFO; our canonical line already covers upstream calls.
    logging.getLogger("httpx").setLevel(logging.WARNING)
