"""The browser the page tests drive: Debian's chromium (scripts/system-deps.sh) through Playwright, headless,
never a browser Playwright downloads."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
