"""Answers kept on disk per (endpoint, query), so an interrupted or repeated run resumes where it stopped.

One append-only JSONL file per endpoint identity (URL, model, instruction, fusion; never the key). A line
is keyed by a digest of everything sent for the query (its text, the products, rank_fields, top_n), so an
edited query or product is simply asked again. A line cut short by an interruption is ignored.

A line holds the answer's order, scores, fused scores and ``tokens`` (``meta.tokens``; null when the endpoint
reported none). Lines written before rerank-eval kept tokens have no ``tokens`` key: their answers still
count for relevance, and their tokens are unknown (``predates_tokens``), so the report can say why.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from gateway.eval.client import Endpoint, Ranked
from gateway.eval.dataset import LabelledQuery


def request_key(query: LabelledQuery, rank_fields: list[str] | None, top_n: int | None) -> str:
    sent = [query.query, [c.document for c in query.candidates], rank_fields, top_n]
    return hashlib.sha256(json.dumps(sent, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


class ResultStore:
    def __init__(self, directory: Path | None, endpoint: Endpoint) -> None:
        """``directory`` None keeps nothing (``--no-cache``)."""
        self._answers: dict[str, Ranked] = {}
        self._before_tokens: set[str] = set()  # keys of lines written before tokens were kept
        self.path: Path | None = None
        if directory is None:
            return
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", endpoint.name)[:40]
        self.path = directory / f"{slug}-{endpoint.identity()}.jsonl"
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                entry = _entry(line)
                if entry is not None:
                    key, ranked, old = entry
                    self._answers[key] = ranked
                    if old:
                        self._before_tokens.add(key)
                    else:  # the same search answered again later, by a newer rerank-eval
                        self._before_tokens.discard(key)

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> Ranked | None:
        return self._answers.get(key)

    def predates_tokens(self, key: str) -> bool:
        """Whether the stored answer comes from a line written before rerank-eval kept token counts."""
        return key in self._before_tokens

    def put(self, key: str, ranked: Ranked) -> None:
        self._answers[key] = ranked
        self._before_tokens.discard(key)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:  # one write per line: a crash cuts at most one
            out.write(json.dumps({"key": key, **ranked.as_json()}) + "\n")


def _entry(line: str) -> tuple[str, Ranked, bool] | None:
    """A line's key, answer and whether it predates token counts; None for a line cut short (or not ours)."""
    try:
        data: Any = json.loads(line)
        return str(data["key"]), Ranked.from_json(data), "tokens" not in data
    except (ValueError, KeyError, TypeError, AttributeError):  # ValueError: JSON's, and int()'s
        return None
