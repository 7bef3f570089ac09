"""``python -m gateway`` (console script ``rerank-gateway``): serve, check the configuration, make a key, list
the settings;
``python -m gateway eval ...`` runs the evaluation command (``rerank-eval``, gateway/eval)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from gateway.settings import Settings


def _configuration() -> Settings | None:
    """Settings and keys from the environment, or None after printing one clear line per problem."""
    from gateway.app import load_keyring  # noqa: PLC0415  # pulls in the app only when needed

    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            # Name the environment variable the operator has to fix, e.g. RERANK_MODEL_DIR.
            where = "RERANK_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
            print(f"gateway: invalid configuration: {where}: {error['msg']}", file=sys.stderr)
        return None
    try:  # here, in one line, rather than in every worker with a traceback
        load_keyring(settings)
    except ValueError as exc:
        print(f"gateway: invalid configuration: {exc}", file=sys.stderr)
        return None
    return settings


def _serve() -> int:
    settings = _configuration()
    if settings is None:
        return 2
    from gateway.workerstate import STATE_ENV  # noqa: PLC0415

    # Fresh per start, removed at exit: the worker state /ready reads and, with metrics on, the files the
    # workers write their totals to (gateway/observe/metrics.py); files from an earlier run would add old
    # counts. Workers find both through the environment they inherit.
    run_dir = Path(tempfile.mkdtemp(prefix="rerank-gateway-"))
    state_file = run_dir / "workers.json"
    os.environ[STATE_ENV] = str(state_file)
    try:
        if settings.metrics_port:
            metrics_dir = run_dir / "metrics"
            metrics_dir.mkdir()
            os.environ["RERANK_METRICS_DIR"] = str(metrics_dir)
            if not _serve_metrics(settings, metrics_dir, state_file):
                return 2
        _granian(settings, state_file)
        return 0
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _serve_metrics(settings: Settings, metrics_dir: Path, state_file: Path) -> bool:
    from gateway.observe import scrape  # noqa: PLC0415

    served = settings.fleet()
    collectors = [
        scrape.BuildInfo([(m.name, m.model_dir, settings.precision(m)) for m in served.members]),
        # vLLM's own metrics from this pod's vLLMs: a remote model's are its own pod's to export.
        scrape.VllmMetrics({member.name: member.url for member in settings.own_vllms()}),
        scrape.WorkerProcesses(state_file),
    ]
    try:
        scrape.serve(settings.metrics_host, settings.metrics_port, scrape.registry(metrics_dir, collectors))
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        print(
            f"gateway: cannot serve metrics on {where}: {exc}; set RERANK_METRICS_PORT to a free port "
            "(0 turns metrics off)",
            file=sys.stderr,
        )
        return False
    return True


def _granian(settings: Settings, state_file: Path) -> None:
    from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415
    from granian.http import HTTP1Settings  # noqa: PLC0415
    from granian.log import LogLevels  # noqa: PLC0415

    from gateway.framing import HEAD_BUFFER_BYTES  # noqa: PLC0415
    from gateway.logconfig import server_log_config  # noqa: PLC0415
    from gateway.workers import Supervisor  # noqa: PLC0415  # only the serve command needs the server

    Supervisor(
        "gateway.asgi:app_from_env",
        state_file=state_file,
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        # HTTP/1 only: protocol auto-detection runs before hyper's header timer starts, so a client that
        # connects and sends nothing would be held for ever (README "Slow clients").
        http=HTTPModes.http1,
        # hyper's header read timeout runs from connect and again from each answer until the next request's
        # headers are in, so it also closes idle keep-alive connections and silent ones.
        # max_buffer_size bounds the request line and headers: past it granian answers 431 itself; within
        # it gateway/framing.py answers in the Cohere shape.
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.header_read_timeout_s * 1000), max_buffer_size=HEAD_BUFFER_BYTES
        ),
        log_access=False,  # the gateway writes its own canonical line per request
        log_level=LogLevels(settings.log_level),
        log_dictconfig=server_log_config(level=settings.log_level, json=settings.log_format == "json"),
        # On SIGTERM granian stops accepting and lets in-flight requests finish, for at most this long.
        workers_kill_timeout=settings.drain_timeout_s,
    ).serve()


def _keygen(key_id: str) -> int:
    from gateway.keys import generate  # noqa: PLC0415

    try:
        raw, line = generate(key_id)
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    print(f"API key (give it to the client; it is not stored anywhere): {raw}", file=sys.stderr)
    print("Add this line to the keys file (RERANK_API_KEYS_FILE) or RERANK_API_KEYS:", file=sys.stderr)
    print(line)
    return 0


def settings_tables() -> tuple[str, str]:
    """The README's two configuration tables, from the code: the gateway's settings, then the variables of
    vLLM and the entrypoint (model_setup/defaults.py)."""
    from gateway.settings import documented  # noqa: PLC0415
    from model_setup.defaults import VARIABLES  # noqa: PLC0415

    def table(rows: list[tuple[str, str, str]]) -> str:
        lines = ["| variable | default | meaning |", "|---|---|---|"]
        lines += [f"| `{name}` | {default} | {meaning} |" for name, default, meaning in rows]
        return "\n".join(lines) + "\n"

    container = [(v.name, v.shown or _code(v.default), v.meaning) for v in VARIABLES]
    return table([(name, _code(default), meaning) for name, default, meaning in documented()]), table(
        container
    )


def _code(value: str) -> str:
    return f"`{value}`" if value and not value.startswith(("(", "`")) else value


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["eval"]:  # its own parser, and a client: none of the server is imported for it
        from gateway.eval.__main__ import main as evaluate  # noqa: PLC0415

        return evaluate(args[1:])
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve the API (default); configured by RERANK_* variables")
    sub.add_parser("check", help="validate the RERANK_* configuration and keys, then exit (0 or 2)")
    keygen = sub.add_parser("keygen", help="make a new API key and print its keys-file line")
    keygen.add_argument("key_id", help="non-secret id that logs and limits use, e.g. shop-42")
    sub.add_parser("settings", help="print every RERANK_* variable with its default and meaning (Markdown)")
    sub.add_parser("eval", help="measure relevance on labelled searches (rerank-eval --help)", add_help=False)
    ns = parser.parse_args(args)
    if ns.command == "keygen":
        return _keygen(ns.key_id)
    if ns.command == "settings":
        print("\n".join(settings_tables()), end="")
        return 0
    if ns.command == "check":
        return 0 if _configuration() is not None else 2
    return _serve()


if __name__ == "__main__":
    raise SystemExit(main())
