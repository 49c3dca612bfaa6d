"""The fake backend and the tiny corpus: built-in plugins for testing the engine without a model.

The ``fake`` backend is deterministic (a prompt's lengths follow from its seed),
respects the cap (``finish_reason="length"`` exactly at ``max_new_tokens``) and costs
almost nothing, so it exercises the engine, the store and the metrics without a model.
It is a stand-in for a model when testing the *engine*, never for a real backend.
The ``tiny`` corpus yields a fixed list of prompts. Both are registered as castillo's
built-in plugin, so the ``castillo`` command can use them too (benchmarks, demos of
the engine). The ``castillo_plugin`` pytest fixture lives in
:mod:`castillo_core.pytest_plugin`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from castillo_core.api.contracts import Backend, Corpus, ModelInfo
from castillo_core.api.described import parse_options
from castillo_core.api.hookspecs import hookimpl
from castillo_core.api.records import (
    GenerationConfig,
    GenerationRequest,
    Prompt,
    PromptResult,
    Rejection,
    Rendered,
    SamplingSettings,
)
from castillo_core.api.requests import build_requests


def _mix_array(values: Any) -> Any:
    """splitmix64 over a uint64 array: a cheap, well-spread hash of seeds (seed -> length)."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class FakeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean_tokens: int = Field(64, ge=1, description="mean of the uniform length distribution")
    delay: float = Field(0.0, ge=0.0, description="seconds to sleep per prompt (crash tests)")
    fail_after: int | None = Field(None, ge=0, description="raise after this many prompts (failure tests)")
    batch: int = Field(64, ge=1, description="prompts per simulated batch")


class FakeBackend(Backend):
    """A deterministic backend for testing the engine: lengths hashed from seeds."""

    name = "fake"
    description = "deterministic fake backend for tests and engine benchmarks (no model)"
    default_model = "fake/model"
    aliases = ("fake-backend",)

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.options = parse_options(FakeOptions, spec.options, "backend fake")
        self.generated_prompts = 0

    @classmethod
    def hashed_options(cls, options: Any) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k == "mean_tokens"}

    def open(self) -> ModelInfo:
        return ModelInfo(
            model=self.model_id(self.spec),
            revision="fake-rev",
            dtype="none",
            chat_template="{user}",
            library_versions={},
            hardware="none",
        )

    def sampling(self, config: GenerationConfig) -> SamplingSettings:
        if config.model_defaults:
            return SamplingSettings.from_config(config, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
        return SamplingSettings.from_config(config)

    def render(self, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
        out = []
        for prompt in prompts:
            size = len(prompt.prompt_text.split()) + 2  # two "template" tokens, like a chat wrapper
            out.append(Rendered(input_size=min(size, max_prompt_tokens), truncated=size > max_prompt_tokens))
        return out

    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, config: GenerationConfig
    ) -> Iterator[PromptResult]:
        import numpy as np  # here, not at import: this module loads at every castillo start

        cap = config.max_new_tokens
        span = 2 * self.options.mean_tokens
        for start in range(0, len(requests), self.options.batch):
            chunk = requests[start : start + self.options.batch]
            # one vectorized hash per simulated batch: the fake must cost next to nothing
            seeds = np.concatenate([np.arange(r.seed, r.seed + r.n, dtype=np.uint64) for r in chunk])
            lengths = (1 + _mix_array(seeds) % np.uint64(span)).astype(np.int64)
            np.minimum(lengths, cap, out=lengths)
            offset = 0
            for request in chunk:
                if self.options.fail_after is not None and self.generated_prompts >= self.options.fail_after:
                    raise RuntimeError(f"fake backend failing after {self.options.fail_after} prompts (fail_after)")
                if self.options.delay:
                    time.sleep(self.options.delay)
                # validated as one nested record: pydantic checks every completion in Rust
                completions = [
                    {
                        "sample_index": i,
                        "seed": request.seed + i,
                        "output_tokens": length,
                        "finish_reason": "length" if length >= cap else "stop",
                        "text": f"w{(request.seed + i) % 1000} " * length,
                    }
                    for i, length in enumerate(lengths[offset : offset + request.n].tolist())
                ]
                offset += request.n
                self.generated_prompts += 1
                yield PromptResult.model_validate({"key": request.key, "completions": completions})


_TINY_PROMPTS = (
    "Write a haiku about the sea.",
    "Explain what a hash table is.",
    "Give three tips for writing clear emails.",
    "What is the capital of Australia?",
    "Summarize the plot of Hamlet in two sentences.",
    "Write a Python function that reverses a string.",
    "List five prime numbers.",
    "Why is the sky blue?",
    "Translate 'good morning' into French.",
    "Describe a cat to someone who has never seen one.",
    "What is the difference between a list and a tuple in Python?",
    "Suggest a name for a bakery.",
)


class TinyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(len(_TINY_PROMPTS), ge=0, description="number of prompts (cycled, numbered past 12)")
    reject_every: int | None = Field(None, ge=1, description="reject every k-th record (tests of rejections)")


class TinyCorpus(Corpus):
    """A tiny fixed corpus; ``size`` beyond 12 numbers the prompts to keep them unique."""

    name = "tiny"
    dataset = "Tiny"
    description = "a tiny built-in corpus for tests and demos of the engine"
    source_note = "built into castillo_core.testing"
    license = "CC0"
    size = "12 (or `size` option)"
    default_split = "test"

    def __init__(self, selection: Any) -> None:
        super().__init__(selection)
        self.options = parse_options(TinyOptions, selection.options, "corpus tiny")

    def iter_prompts(self) -> Iterator[Prompt | Rejection]:
        for i in range(self.options.size):
            if self.options.reject_every and (i + 1) % self.options.reject_every == 0:
                yield Rejection(dataset=self.dataset, source="tiny", index=i, reason="rejected by reject_every")
                continue
            base = _TINY_PROMPTS[i % len(_TINY_PROMPTS)]
            text = base if i < len(_TINY_PROMPTS) else f"{base} (variant {i})"
            yield Prompt(
                dataset=self.dataset, split=self.split, prompt_text=text, category="tiny" if i % 2 else "undefined"
            )


@hookimpl
def castillo_register_backends(register: Any) -> None:
    register(FakeBackend)


@hookimpl
def castillo_register_corpora(register: Any) -> None:
    register(TinyCorpus)


def requests_for(
    backend: Backend, texts: Sequence[str], n: int, max_prompt_tokens: int = 2500, seed: int = 1000
) -> list[GenerationRequest]:
    """Render ``texts`` with ``backend`` into requests exactly as the engine does (for backend tests).

    Seeds come from :func:`castillo_core.build_requests` with run seed ``seed``: each
    prompt's from its id, so no two prompts share a noise stream.
    """
    prompts = [Prompt(dataset="t", prompt_text=t) for t in texts]
    rendered = backend.render(prompts, max_prompt_tokens)
    config = GenerationConfig(n=n, seed=seed, max_prompt_tokens=max_prompt_tokens)
    return build_requests(prompts, rendered, config, backend=backend.name)


def generate_sorted(backend: Backend, requests: Sequence[GenerationRequest], **config: Any) -> list[PromptResult]:
    """Every result of one ``generate`` call, sorted by key; ``config`` sets GenerationConfig fields."""
    gen = GenerationConfig(n=requests[0].n, **config)
    return sorted(backend.generate(requests, backend.sampling(gen), gen), key=lambda r: r.key)


def env_without_plugins() -> dict[str, str]:
    """A copy of the environment that loads no entry-point plugins (builtins only)."""
    env = dict(os.environ)
    env["CASTILLO_LOAD_PLUGINS"] = ""
    return env
