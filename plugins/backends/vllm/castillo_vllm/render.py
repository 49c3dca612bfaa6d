"""Prompt rendering for vLLM: castillo's shared tokenizer rendering (castillo_core.api.rendering).

castillo renders here instead of letting vLLM tokenize text, so that the ids that are
counted (``input_size``) are the ids that are generated from, and so that one model
renders to the same ids, ``input_size`` and truncation on the vLLM and transformers
backends (both use :func:`castillo_core.render_with_tokenizer`).
"""

from __future__ import annotations

from castillo_core import has_chat_template, render_with_tokenizer

render_prompts = render_with_tokenizer

__all__ = ["has_chat_template", "render_prompts"]
