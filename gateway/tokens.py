"""Token budgets: fit every (query, document) prompt into the model's context.

The gateway tokenizes with the model's own ``tokenizer.json`` so that it can truncate (v2) or chunk (v1)
documents instead of letting vLLM reject them. Cuts are made at token boundaries in the original text (via
offsets), so the text vLLM re-tokenizes is a clean prefix of what the user sent.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from model_setup.prompt import around_document, render

# Re-tokenizing a cut-out piece can merge differently at its edges, and so can the query and the document
# where they meet the prompt around them (counted apart, see document_budget); this slack absorbs both.
SAFETY_MARGIN = 16
SKELETONS_CACHED = 256  # distinct instructions whose prompt skeleton length is remembered
QUERIES_CACHED = 1024  # distinct queries likewise


class PromptBudget:
    def __init__(self, tokenizer: Tokenizer, *, max_model_len: int) -> None:
        self._tokenizer = tokenizer
        self._max_model_len = max_model_len
        # Per instance rather than a decorator on the method: each budget (one per app) has its own bounds.
        self._skeleton = functools.lru_cache(maxsize=SKELETONS_CACHED)(self._skeleton_tokens)
        # Head queries repeat: their counts are remembered too (short strings, bounded count).
        self.query_tokens = functools.lru_cache(maxsize=QUERIES_CACHED)(self.count)
        self._around = functools.lru_cache(maxsize=QUERIES_CACHED)(self._around_document_tokens)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @classmethod
    def from_model_dir(cls, model_dir: Path, *, max_model_len: int) -> PromptBudget:
        return cls(Tokenizer.from_file(str(model_dir / "tokenizer.json")), max_model_len=max_model_len)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def _skeleton_tokens(self, instruction: str) -> int:
        return self.count(render(instruction, "", ""))

    def _around_document_tokens(self, instruction: str, query: str) -> int:
        head, tail = around_document(instruction, query)
        return self.count(head) + self.count(tail)

    def prompt_tokens(self, instruction: str, query: str, texts: Sequence[str]) -> list[int]:
        """Each text's whole prompt in tokens, exactly as vLLM counts it (``meta.tokens``, README "API").

        Exact, not an estimate: the prompt splits cleanly on both sides of the document. ``<Document>:`` ends
        a pre-token whatever follows (the template puts a space next), and the tail starts with a special
        token, so a prompt's count is the count around the document plus the document's with its leading
        space (tests/test_tokens.py checks it against whole prompts, tests/test_compat.py against vLLM).
        """
        around = self._around(instruction, query)
        encodings = self._tokenizer.encode_batch([f" {text}" for text in texts], add_special_tokens=False)
        return [around + len(encoding.ids) for encoding in encodings]

    def document_budget(self, instruction: str, query: str, *, query_tokens: int | None = None) -> int:
        """Tokens left for one document once the prompt, instruction and query are in.

        The skeleton (system line, template, instruction) depends only on the instruction and is counted once
        per instruction; the query is counted on its own (pass ``query_tokens`` when already known).
        Byte-level BPE pre-tokenizes on word boundaries, so the sum differs from the whole prompt's count by
        a token or two at each seam, well inside SAFETY_MARGIN (tests/test_hot_path.py checks it).
        """
        if query_tokens is None:
            query_tokens = self.count(query)
        return self._max_model_len - self._skeleton(instruction) - query_tokens - SAFETY_MARGIN

    @staticmethod
    def fits(texts: list[str], *, chunk_tokens: int) -> bool:
        """True when no text can exceed ``chunk_tokens``, so none needs tokenizing (a bound, no BPE)."""
        return all(_max_tokens(text) <= chunk_tokens for text in texts)

    def split(self, texts: list[str], *, chunk_tokens: int, max_chunks: int) -> list[list[str]]:
        """Each text as up to ``max_chunks`` consecutive pieces of at most ``chunk_tokens`` tokens.

        ``max_chunks=1`` is plain truncation. Text beyond the last chunk is dropped, as Cohere does.
        """
        pieces = [[text] for text in texts]
        # Byte-level BPE never makes more tokens than UTF-8 bytes of the (NFC-normalised) text it sees,
        # so short texts need no tokenizing. NFC can lengthen text (U+1D160 becomes three code points).
        long = [i for i, text in enumerate(texts) if _max_tokens(text) > chunk_tokens]
        if not long:
            return pieces
        encodings = self._tokenizer.encode_batch([texts[i] for i in long], add_special_tokens=False)
        for i, encoding in zip(long, encodings, strict=True):
            offsets = encoding.offsets
            total = len(offsets)
            if total <= chunk_tokens:
                continue
            text = texts[i]
            # Cut every chunk_tokens tokens; where a cut falls inside a character (its byte tokens share
            # one offset) move it forward to the next character, so no piece is empty or splits one.
            bounds = [0]
            while len(bounds) <= max_chunks and bounds[-1] < total:
                k = bounds[-1] + chunk_tokens
                while k < total and offsets[k][0] <= offsets[bounds[-1]][0]:
                    k += 1
                bounds.append(min(k, total))
            cuts = [offsets[k][0] if k < total else len(text) for k in bounds]
            pieces[i] = [text[a:b] for a, b in itertools.pairwise(cuts) if b > a][:max_chunks]
        return pieces


def _max_tokens(text: str) -> int:
    """An upper bound on the tokens of ``text``, without tokenizing it."""
    if text.isascii():  # NFC leaves ASCII alone and each character is one byte: skip both passes
        return len(text)
    return len(unicodedata.normalize("NFC", text).encode())
