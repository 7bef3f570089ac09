"""Token budgets: fit every (query, document) prompt into the model's context.

The gateway tokenizes with the model's own ``tokenizer.json`` so that it can truncate (v2) or chunk (v1)
documents instead of letting vLLM reject them. Cuts are made at token boundaries in the original text (via
offsets), so the text vLLM re-tokenizes is a clean prefix of what the user sent.
"""

from __future__ import annotations

import itertools
import unicodedata
from pathlib import Path

from tokenizers import Tokenizer

from model_setup.prompt import render

# Re-tokenizing a cut-out piece can merge differently at its edges; a few tokens of slack absorb that.
SAFETY_MARGIN = 16


class PromptBudget:
    def __init__(self, tokenizer: Tokenizer, *, max_model_len: int) -> None:
        self._tokenizer = tokenizer
        self._max_model_len = max_model_len

    @classmethod
    def from_model_dir(cls, model_dir: Path, *, max_model_len: int) -> PromptBudget:
        return cls(Tokenizer.from_file(str(model_dir / "tokenizer.json")), max_model_len=max_model_len)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def document_budget(self, instruction: str, query: str) -> int:
        """Tokens left for one document once the prompt, instruction and query are in."""
        overhead = self.count(render(instruction, query, ""))
        return self._max_model_len - overhead - SAFETY_MARGIN

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
    return len(unicodedata.normalize("NFC", text).encode())
