"""JSON Lines files for the evaluation's tests: searches, labelled or a query log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n", encoding="utf-8")
    return path
