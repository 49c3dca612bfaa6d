"""Rendering a prompt with a Hugging Face-style tokenizer: template once, truncation flagged.

Shared by every backend that tokenizes in castillo (transformers, vLLM), so one model
renders to the same ids, the same ``input_size`` and the same truncation on each. The
tokenizer is duck-typed (``apply_chat_template``, ``encode``, ``decode``,
``bos_token_id``, ``eos_token_id``, ``chat_template``): the core imports no tokenizer
library.

The template already writes the special tokens the model expects (BOS included), so its
text is encoded with ``add_special_tokens=False``, as ``apply_chat_template(tokenize=True)``
does; encoding it again with special tokens is the classic double-BOS bug. Without a
template (base models) the prompt text is encoded with the tokenizer's own special tokens.

Truncation keeps the template whole and cuts the last message's content from its end, so
a truncated prompt still ends in the assistant header and the model answers it instead of
continuing the user's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from castillo_core.api.records import Prompt, Rendered


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (base models often do not)."""
    return bool(getattr(tokenizer, "chat_template", None))


def template_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The chat-templated prompt as ids, ending with the assistant's generation prompt."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
        ids = ids[1:]  # a template that writes BOS twice (bos_token plus a literal one)
    return ids


def encode_prompt(tokenizer: Any, prompt: Prompt, max_tokens: int, templated: bool) -> tuple[list[int], bool]:
    """``(ids, truncated)``: at most ``max_tokens`` ids.

    A templated prompt that is too long keeps the head of its last message and the whole
    template around it; if even the template cannot fit, its last ``max_tokens`` ids (the
    generation prompt survives). Without a template, the prompt text is encoded with the
    tokenizer's own special tokens and cut to its first ``max_tokens`` ids.
    """
    if not templated:
        ids = list(tokenizer.encode(prompt.prompt_text, add_special_tokens=True))
        if len(ids) > max_tokens:
            return ids[:max_tokens], True
        return ids or _fallback(tokenizer), False
    messages = prompt.chat_messages()
    ids = template_ids(tokenizer, messages)
    if len(ids) <= max_tokens:
        return ids, False
    content = list(tokenizer.encode(messages[-1]["content"], add_special_tokens=False))
    keep = len(content) - (len(ids) - max_tokens)
    while keep > 0:  # re-encoding a decoded cut can merge tokens differently: shrink until it fits
        messages[-1] = {**messages[-1], "content": tokenizer.decode(content[:keep])}
        ids = template_ids(tokenizer, messages)
        if len(ids) <= max_tokens:
            return ids, True
        keep -= max(1, len(ids) - max_tokens)
    return template_ids(tokenizer, prompt.chat_messages())[-max_tokens:], True


def _fallback(tokenizer: Any) -> list[int]:
    """An empty plain prompt still needs one id to condition on (some engines refuse empty prompts)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [int(token)]


def render_with_tokenizer(
    tokenizer: Any, prompts: Sequence[Prompt], max_prompt_tokens: int, templated: bool | None = None
) -> list[Rendered]:
    """Render each prompt to token ids (the ``Rendered.payload``, a tuple), flagging truncation."""
    if templated is None:
        templated = has_chat_template(tokenizer)
    out = []
    for prompt in prompts:
        ids, truncated = encode_prompt(tokenizer, prompt, max_prompt_tokens, templated)
        out.append(Rendered(input_size=len(ids), truncated=truncated, payload=tuple(ids)))
    return out
