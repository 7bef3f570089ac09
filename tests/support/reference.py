"""The Qwen3-Reranker model card's transformers recipe, written out as the card gives it.

Deliberately independent of model_setup.prompt and the Jinja template: it is the yardstick they are held to.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
MAX_LENGTH = 8192


class CardReranker:
    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.prefix_tokens = self.tokenizer.encode(CARD_PREFIX, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(CARD_SUFFIX, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction: str, query: str, doc: str) -> str:
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def input_ids(self, instruction: str, query: str, docs: list[str]) -> list[list[int]]:
        pairs = [self.format_instruction(instruction, query, doc) for doc in docs]
        encoded = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=MAX_LENGTH - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        return [self.prefix_tokens + list(ids) + self.suffix_tokens for ids in encoded["input_ids"]]

    def scores(
        self, instruction: str, query: str, docs: list[str], *, suffix: str | None = None
    ) -> list[float]:
        ids = self.input_ids(instruction, query, docs)
        if suffix is not None:  # a deliberately wrong suffix, to show the comparison can fail
            wrong = self.tokenizer.encode(suffix, add_special_tokens=False)
            ids = [row[: len(row) - len(self.suffix_tokens)] + wrong for row in ids]
        batch = self.tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = self.model(**batch).logits[:, -1, :]
        pair = torch.stack([logits[:, self.token_false_id], logits[:, self.token_true_id]], dim=1)
        return [float(x) for x in torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()]
