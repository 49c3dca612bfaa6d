"""Chat template once, token count, truncation: a prompt as the token ids vLLM will see.

castillo renders here instead of letting vLLM tokenize text, so that the ids that are
counted (``input_size``) are the ids that are generated from, and so that every backend
renders a prompt the same way: ``apply_chat_template(..., tokenize=False)`` and then
``encode(add_special_tokens=False)``. Encoding the rendered text *with* special tokens
would put a second BOS in front of the one the template already wrote.

Truncation keeps the template whole and cuts the last message's content from its end
(CASTILLO v1 kept a prefix of the prompt text), so a truncated prompt still ends in the
assistant header and the model answers it instead of continuing the user's text. The
rules are the transformers backend's (castillo_transformers.rendering), restated here
because a plugin imports only castillo_core: one model renders to the same ids on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from castillo_core import Prompt, Rendered


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


def encode(tokenizer: Any, prompt: Prompt, max_tokens: int, templated: bool) -> tuple[list[int], bool]:
    """``(ids, truncated)``: at most ``max_tokens`` ids, as the transformers backend renders.

    The same rule on both backends keeps ``input_size`` and truncation identical for one
    model. A templated prompt that is too long keeps the head of its last message and the
    whole template around it; if even the template cannot fit, its last ``max_tokens`` ids
    (the generation prompt survives). Without a template, the prompt text is encoded with
    the tokenizer's own special tokens and cut to its first ``max_tokens`` ids.
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
    """An empty plain prompt still needs one id to condition on (vLLM refuses empty prompts)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [int(token)]


def render_prompts(tokenizer: Any, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
    """Render each prompt to token ids (the ``Rendered.payload``), flagging truncation."""
    templated = has_chat_template(tokenizer)
    out = []
    for prompt in prompts:
        ids, truncated = encode(tokenizer, prompt, max_prompt_tokens, templated)
        out.append(Rendered(input_size=len(ids), truncated=truncated, payload=ids))
    return out
