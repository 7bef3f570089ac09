"""``python -m gateway.demo`` (console script ``rerank-demo``): the try-it page for a rerank deployment.

    rerank-demo --base-url https://rerank.example.com --api-key-file ~/.config/rerank/key

Options override RERANK_DEMO_* variables of the same name (RERANK_DEMO_BASE_URL, ...). Secrets come
from files or the environment only: --api-key-file or RERANK_DEMO_API_KEY, --password-file or
RERANK_DEMO_PASSWORD (with a password set, the page asks for --username, default "demo", and it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from gateway.demo.settings import DemoSettings, password_check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # "--api-key rk_..." must fail, not be taken for --api-key-file
    )
    parser.add_argument("--base-url", help="the gateway's address (default http://127.0.0.1:8000)")
    parser.add_argument("--api-key-file", type=Path, help="file holding the raw API key (rk_...)")
    parser.add_argument("--instruction", help="the deployment's default instruction, prefilled on the page")
    parser.add_argument("--host", help="address the page listens on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="the page's port (default 7860)")
    parser.add_argument("--username", help="username the page asks for when a password is set (default demo)")
    parser.add_argument("--password-file", type=Path, help="file holding the page's password")
    parser.add_argument("--timeout-s", type=float, help="seconds to wait for the gateway (default 60)")
    return parser


def _fail(message: str) -> int:
    print(f"rerank-demo: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    given = {name: value for name, value in vars(_parser().parse_args(argv)).items() if value is not None}
    try:
        settings = DemoSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            where = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "settings"
            print(f"rerank-demo: invalid setting {where}: {error['msg']}", file=sys.stderr)
        return 2
    try:
        api_key = settings.read_api_key()
        password = settings.read_password()
    except ValueError as exc:
        return _fail(str(exc))
    if password is None and not settings.is_loopback:
        print(
            f"rerank-demo: warning: listening on {settings.host} without a password; anyone who reaches "
            "the page spends this key (set --password-file)",
            file=sys.stderr,
        )

    # Imported here: gradio takes seconds to import, and a wrong setting should fail before that.
    from gateway.demo.client import GatewayClient  # noqa: PLC0415
    from gateway.demo.page import build, serve  # noqa: PLC0415

    client = GatewayClient(settings.base_url, api_key, timeout_s=settings.timeout_s)
    page = build(client, settings.instruction)
    auth = password_check(settings.username, password) if password is not None else None
    try:
        url = serve(page, host=settings.host, port=settings.port, auth=auth)
    except OSError as exc:
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc}")
    print(
        f"rerank-demo: page on {url} (calling the gateway at {settings.base_url})",
        file=sys.stderr,
        flush=True,
    )
    page.block_thread()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
