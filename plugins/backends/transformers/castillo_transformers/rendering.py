"""Turning a prompt into token ids: the chat template applied once, truncation flagged.

The template already writes the special tokens the model expects (BOS included), so
its text is tokenized with ``add_special_tokens=False``, exactly as transformers'
``apply_chat_template(tokenize=True)`` does; tokenizing it again with special tokens is
the classic double-BOS bug. Without a template (base models, or ``chat_template=none``)
the prompt text is tokenized with the tokenizer's own special tokens.
"""

from __future__ import annotations

from typing import Any

from castillo_core import Prompt


def template_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The chat-templated prompt as ids, ending with the assistant's generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
        ids = ids[1:]  # a template that writes BOS twice (bos_token plus a literal one)
    return ids


def encode(tokenizer: Any, prompt: Prompt, max_tokens: int, use_template: bool) -> tuple[list[int], bool]:
    """``(ids, truncated)``: at most ``max_tokens`` ids.

    A templated prompt that is too long keeps the head of its last message (the question
    as asked) and the whole template around it, so the generation prompt survives; if
    even that cannot fit, the last ``max_tokens`` ids are kept. A plain prompt keeps
    its first ``max_tokens`` ids.
    """
    if not use_template:
        ids = list(tokenizer(prompt.prompt_text, add_special_tokens=True)["input_ids"])
        if len(ids) > max_tokens:
            return ids[:max_tokens], True
        return ids or _fallback(tokenizer), False
    messages = prompt.chat_messages()
    ids = template_ids(tokenizer, messages)
    if len(ids) <= max_tokens:
        return ids, False
    content = list(tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"])
    keep = len(content) - (len(ids) - max_tokens)
    while keep > 0:
        messages[-1] = {**messages[-1], "content": tokenizer.decode(content[:keep])}
        ids = template_ids(tokenizer, messages)
        if len(ids) <= max_tokens:
            return ids, True
        keep -= max(1, len(ids) - max_tokens)
    return template_ids(tokenizer, prompt.chat_messages())[-max_tokens:], True


def _fallback(tokenizer: Any) -> list[int]:
    """An empty plain prompt still needs one id to condition on."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [int(token)]
