"""Token budgets: fit every (query, document) prompt into the model's context.

The gateway tokenizes with the model's own ``tokenizer.json`` so that it can truncate (v2) or chunk (v1)
documents instead of letting vLLM reject them. Cuts are made at token boundaries in the original text (via
offsets), so the text vLLM re-tokenizes is a clean prefix of what the user sent.
"""

from __future__ import annotations

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
        # Byte-level BPE never makes more tokens than UTF-8 bytes, so short texts need no tokenizing.
        long = [i for i, text in enumerate(texts) if len(text.encode()) > chunk_tokens]
        if not long:
            return pieces
        encodings = self._tokenizer.encode_batch([texts[i] for i in long], add_special_tokens=False)
        for i, encoding in zip(long, encodings, strict=True):
            offsets = encoding.offsets
            total = len(offsets)
            if total <= chunk_tokens:
                continue
            text = texts[i]
            starts = [0, *(offsets[k][0] for k in range(chunk_tokens, total, chunk_tokens))][:max_chunks]
            kept_tokens = len(starts) * chunk_tokens
            end = offsets[kept_tokens][0] if kept_tokens < total else len(text)
            pieces[i] = [text[a:b] for a, b in zip(starts, [*starts[1:], end], strict=True)]
        return pieces
