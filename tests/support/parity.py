"""What parity with the model card means here: our Jinja template rendered the way vLLM renders it (its tokens
are compared with the card's recipe, tests/support/reference.py) and how close a served score must come to
the card's."""

from __future__ import annotations

from model_setup.serving import TEMPLATE_PATH

TOLERANCE = 1e-4


def template_prompt(tokenizer: object, instruction: str | None, query: str, doc: str) -> str:
    """Render our Jinja template the way vLLM does: HF chat templating with roles query/document."""
    kwargs = {} if instruction is None else {"instruction": instruction}
    prompt: str = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        [{"role": "query", "content": query}, {"role": "document", "content": doc}],
        chat_template=TEMPLATE_PATH.read_text(),
        tokenize=False,
        **kwargs,
    )
    return prompt
