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

CASTILLO v1 cut differently (``--truncation v1``, :func:`cut_with_tokenizer`): the *raw*
prompt text was tokenized with the tokenizer's own special tokens, and a text over the
cap became the decoding of its first ``max_tokens`` ids (special tokens skipped, and the
spaces before punctuation cleaned up where the tokenizer's config asks for it, as
transformers 4 did when v1 ran); the template was applied to that cut text afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from castillo_core.api.errors import ConfigError
from castillo_core.api.ids import prompt_id
from castillo_core.api.records import Prompt, Rendered

SOURCE_PROMPT_ID = "castillo.source_prompt_id"
"""The metadata key of a prompt cut by ``--truncation v1``: the id of the prompt it was cut from."""


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


def cut_with_tokenizer(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[str | None]:
    """CASTILLO v1's cut of raw prompt texts: each text over ``max_tokens`` ids, or None when it fits.

    As v1's ``check_rawprompt_text_length``: the text is encoded with the tokenizer's own
    special tokens (Llama's BOS counts towards the cap), and a longer text becomes
    ``decode(ids[:max_tokens], skip_special_tokens=True)``. Where the tokenizer's config
    sets ``clean_up_tokenization_spaces`` (Llama 3 does) the decoded text gets
    transformers 4's clean-up (" ." -> ".", " 's" -> "'s", ...), which v1 applied through
    ``decode`` and transformers 5 no longer applies to BPE tokenizers; it is done here once.
    """
    cleanup = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    out: list[str | None] = []
    for text in texts:
        ids = list(tokenizer.encode(text, add_special_tokens=True))
        if len(ids) <= max_tokens:
            out.append(None)
            continue
        try:
            cut = tokenizer.decode(ids[:max_tokens], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        except TypeError:  # a tokenizer whose decode takes no clean-up argument
            cut = tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)
        out.append(clean_up_spaces(cut) if cleanup else cut)
    return out


def v1_cut_prompt(prompt: Prompt, text: str) -> Prompt:
    """The prompt as v1 stored a cut one: the cut text, its v1 id, the uncut prompt's id kept.

    A prompt whose id is the v1 id of its text gets the v1 id of the cut text (v1 hashed
    what it stored); a corpus's own id is kept. The source id goes into the metadata
    (:data:`SOURCE_PROMPT_ID`) and from there into the ``source_prompt_id`` column, so a
    resume knows the source prompt is done. A conversation (several messages) is not
    something v1 ran: it is refused rather than cut somewhere v1 never cut.
    """
    messages = prompt.messages
    if messages and len(messages) > 1:
        raise ConfigError(
            f"prompt {prompt.prompt_id} ({prompt.dataset}) is a conversation of {len(messages)} messages and too "
            "long: --truncation v1 cuts single prompts as CASTILLO v1 did; use --truncation template for conversations"
        )
    derived = prompt.prompt_id == prompt_id(prompt.dataset, prompt.prompt_text)
    update: dict[str, Any] = {
        "prompt_text": text,
        "prompt_id": prompt_id(prompt.dataset, text) if derived else prompt.prompt_id,
        "metadata": {**prompt.metadata, SOURCE_PROMPT_ID: prompt.prompt_id},
    }
    if messages:
        update["messages"] = ({**messages[0], "content": text},)
    return prompt.model_copy(update=update)


def clean_up_spaces(text: str) -> str:
    """transformers 4's ``clean_up_tokenization``: the spaces a word-level decode leaves before punctuation."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def v1_output_tokens(tokens: int, last_id: int | None, stopped: bool, eos_token_id: int | None, cap: int) -> int:
    """A completion's length as CASTILLO v1 counted it (``counting="v1"``), from castillo's exact count.

    v1 set ``pad_token = eos_token`` and counted the generated ids that were not the pad id,
    plus one. A completion that stopped on the tokenizer's ``eos_token`` counts exactly as
    castillo does (the end token once); one that stopped on another end id of the model's
    generation config (Gemma 3's ``<end_of_turn>``, Phi-4-mini's ``<|end|>``) counts one
    more. A capped completion stays at the cap (v1 wrote cap + 1; the v1 export writes
    that), and so does a stop drawn as the last allowed token.
    """
    if not stopped or last_id is None or eos_token_id is None or last_id == eos_token_id:
        return tokens
    return min(tokens + 1, cap)
