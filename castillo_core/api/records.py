"""The records that flow between corpus, backend, metrics and store.

They are pydantic v2 models because they cross plugin boundaries: a third party's
backend hands us ``Completion`` objects and a wrong type must fail loudly at the
boundary, not three stages later inside the Parquet writer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from castillo_core.api.ids import prompt_id as _prompt_id

FinishReason = Literal["stop", "length"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(_Record):
    """One prompt of a corpus.

    ``prompt_id`` is derived from ``dataset`` and ``prompt_text`` exactly as CASTILLO v1
    did when it is not given, so datasets line up prompt for prompt with v1.
    ``messages`` optionally carries a whole conversation (OpenAI-style role/content
    dicts) ending in a user turn; when present, backends render it instead of
    ``prompt_text``.
    """

    prompt_id: str = ""
    dataset: str
    split: str = "full"
    prompt_text: str
    messages: tuple[dict[str, str], ...] | None = None
    category: str = "undefined"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _derive_id(self) -> Prompt:
        if not self.prompt_id:
            object.__setattr__(self, "prompt_id", _prompt_id(self.dataset, self.prompt_text))
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        """The conversation to render: ``messages`` if given, else one user turn."""
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt_text}]


class Rejection(_Record):
    """A corpus record that could not become a prompt, and why.

    Corpora yield these instead of raising so that a bad 900th record never kills a
    run after 899 prompts were generated; the engine summarizes them at the end.
    """

    dataset: str
    source: str
    index: int | str
    reason: str


class GenerationConfig(_Record):
    """The decoding settings of a run: everything that changes the numbers.

    ``model_defaults`` takes the model's own generation config with sampling forced on,
    as CASTILLO v1 did; explicit values given beside it override the model's.
    ``None`` for a sampling parameter means "not set" (the backend's neutral value, or
    the model's default under ``model_defaults``).

    ``truncation`` says how a prompt longer than ``max_prompt_tokens`` is cut: ``template``
    (castillo's default) renders the chat template and cuts the last message so the
    templated prompt fits; ``v1`` cuts the *raw* prompt text to ``max_prompt_tokens`` ids of
    the model's tokenizer first, as CASTILLO v1 did (the cut text and its id are stored,
    the templated prompt may then run a few dozen tokens past the cap).
    ``counting`` says how ``output_tokens`` counts: ``exact`` (generated ids up to and
    including the first stop token) or ``v1`` (one more when the model stopped on an end id
    other than the tokenizer's ``eos_token``, as v1's pad-based count did). Both default
    to castillo's own rule and enter a cell's config hash only when set otherwise.
    """

    n: int = Field(10, ge=1, le=10_000)
    temperature: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    repetition_penalty: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    max_new_tokens: int = Field(1024, ge=1)
    max_prompt_tokens: int = Field(2500, ge=1)
    seed: int = Field(0, ge=0)
    model_defaults: bool = False
    truncation: Literal["template", "v1"] = "template"
    counting: Literal["exact", "v1"] = "exact"

    @model_validator(mode="after")
    def _default_sampling(self) -> GenerationConfig:
        # Without model defaults, an unset temperature means plain sampling at 1.0:
        # castillo measures distributions, so greedy decoding is never implied.
        if not self.model_defaults and self.temperature is None:
            object.__setattr__(self, "temperature", 1.0)
        return self


class SamplingSettings(_Record):
    """The sampling values a backend actually applied for a model.

    Resolved once per model (from the explicit config, or from the model's defaults);
    ``top_k``, ``top_p`` and ``temperature`` fill v1's columns and enter ``sample_id``;
    ``extra`` records every other applied value (repetition_penalty, min_p, ...).
    """

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    source: str = "explicit"
    extra: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_config(cls, config: GenerationConfig, **defaults: Any) -> SamplingSettings:
        """Explicit values of ``config`` over ``defaults`` over neutral values."""
        values: dict[str, Any] = {
            "temperature": 1.0,
            "top_p": 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
        }
        values.update({k: v for k, v in defaults.items() if v is not None and k in values})
        extra = {k: v for k, v in defaults.items() if k not in values and v is not None}
        for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
            value = getattr(config, key)
            if value is not None:
                values[key] = value
        source = "model_defaults" if config.model_defaults else "explicit"
        return cls(**values, source=source, extra=extra)


class ModelSpec(_Record):
    """Which model to open, on which backend, with which options."""

    backend: str
    model: str | None = None
    revision: str | None = None
    dtype: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class CorpusSelection(_Record):
    """Which prompts of a corpus a cell uses.

    ``limit`` takes the first ``limit`` prompts of the (deterministic) selection, so a
    run with a larger limit extends a smaller one; it is therefore not part of the
    config hash, while everything else here is.
    """

    corpus: str
    source: str | None = None
    split: str | None = None
    limit: int | None = Field(None, ge=0)
    sample_seed: int = 42
    options: dict[str, Any] = Field(default_factory=dict)
    strict: bool = False


class Rendered(_Record):
    """A prompt as a backend will feed it: token count, truncation flag, private payload."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    input_size: int = Field(ge=0)
    truncated: bool = False
    payload: Any = None


class GenerationRequest(_Record):
    """One prompt to sample ``n`` times: sample ``i`` uses ``seed + i``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    key: int
    prompt: Prompt
    rendered: Rendered
    seed: int
    n: int


class Completion(_Record):
    """One sampled response.

    ``output_tokens`` counts generated ids up to and including the first stop token
    (never by re-tokenizing text); a response cut by the cap has
    ``finish_reason="length"`` and ``output_tokens == max_new_tokens``.
    """

    sample_index: int = Field(ge=0)
    seed: int
    output_tokens: int = Field(ge=0)
    finish_reason: FinishReason
    text: str
    latency: float = Field(0.0, ge=0.0)


class PromptResult(_Record):
    """All completions of one request, yielded by a backend as soon as they are done."""

    key: int
    completions: tuple[Completion, ...]
    gen_time: float = Field(0.0, ge=0.0)
    # The prompt's token count when the backend learns it only while generating (an HTTP
    # server's usage.prompt_tokens); when set it replaces ``Rendered.input_size``.
    input_size: int | None = Field(None, ge=0)
