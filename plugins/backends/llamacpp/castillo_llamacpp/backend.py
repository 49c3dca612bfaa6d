"""The ``llamacpp`` backend: GGUF models through llama-cpp-python, batched sampling.

This module is imported when castillo lists its plugins, so it must stay cheap: it
never imports llama_cpp (``requires`` lets castillo say what to install instead), and
the low-level layer (:mod:`castillo_llamacpp._llama`) is imported inside ``open``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import (
    Backend,
    BackendError,
    GenerationConfig,
    GenerationRequest,
    ModelInfo,
    ModelSpec,
    Prompt,
    PromptResult,
    Rendered,
    SamplingSettings,
    parse_options,
)
from castillo_llamacpp import models

log = logging.getLogger(__name__)

# Options that change how fast the numbers come, not the numbers: left out of the config
# hash, so a run resumed with more threads or on a GPU continues the same dataset.
SPEED_OPTIONS = frozenset({"n_ctx", "n_threads", "n_gpu_layers", "n_parallel", "verbose"})


class LlamaCppOptions(BaseModel):
    """Backend options (``-B key=value``)."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int | None = Field(
        None,
        ge=16,
        description="KV cache cells shared by all parallel sequences; default: sized so n_parallel samples of "
        "max_new_tokens and the prompts ahead of them fit. Smaller values run fewer sequences at once.",
    )
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: the cores this process may use)")
    n_gpu_layers: int = Field(
        -1, ge=-1, description="layers offloaded to the GPU on a GPU build of llama.cpp (-1: all, 0: none)"
    )
    n_parallel: int = Field(16, ge=1, le=240, description="sequences decoded together in one batch")
    hf_file: str | None = Field(None, description="GGUF file name inside the Hugging Face repo given as --model")
    chat_template: str | None = Field(
        None, description="a Jinja chat template replacing the GGUF's own; 'none' feeds the prompt text as is"
    )
    verbose: bool = Field(False, description="let llama.cpp print its own logs")
    deterministic: bool = Field(
        False,
        description="run each prompt alone in a cleared KV cache, so a resumed run is bit-identical to an "
        "uninterrupted one (slower; n_parallel then enters the config hash)",
    )


class LlamaCppBackend(Backend):
    """GGUF models through llama.cpp; the N samples of a prompt share its KV cache."""

    name = "llamacpp"
    aliases = ("llama.cpp", "llama-cpp", "gguf")
    description = (
        "GGUF models on CPU or GPU through llama-cpp-python; a prompt's N samples decode as parallel sequences"
    )
    requires = ("llama_cpp",)
    install_hint = "pip install llama-cpp-python (GPU builds: see docs/backends/llamacpp.md)"
    default_model = models.DEFAULT_MODEL

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = parse_options(LlamaCppOptions, spec.options, "backend llamacpp")
        self.resolved = models.resolve(spec.model or models.DEFAULT_MODEL, self.options.hf_file)
        self._model: Any = None
        self._ctx: Any = None
        self._template: str | None = None
        self.generator: Any = None  # the last BatchedGenerator (its stats: tests, benchmarks)

    # -- cheap class-level answers ----------------------------------------------------------

    @classmethod
    def model_aliases(cls) -> dict[str, str]:
        return models.aliases()

    @classmethod
    def model_id(cls, spec: ModelSpec) -> str:
        options = spec.options or {}
        hf_file = options.get("hf_file") if isinstance(options, Mapping) else None
        return models.resolve(spec.model or models.DEFAULT_MODEL, hf_file).model_id

    @classmethod
    def hashed_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options that change the numbers.

        ``deterministic`` does (a prompt no longer shares batches with its neighbours), and
        in that mode so does ``n_parallel``: it fixes the batches a prompt's samples decode
        in. Left out when false, so runs from before the option existed keep their hash.
        """
        hashed = {k: v for k, v in options.items() if k not in SPEED_OPTIONS and k != "deterministic"}
        parsed = parse_options(LlamaCppOptions, options, "backend llamacpp")
        if parsed.deterministic:
            hashed["deterministic"] = True
            hashed["n_parallel"] = parsed.n_parallel
        return hashed

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> ModelInfo:
        from castillo_llamacpp import _llama

        path = models.fetch(self.resolved, self.spec.revision)
        if self.spec.dtype:
            log.warning("backend llamacpp: --dtype %s ignored; a GGUF file fixes its own types", self.spec.dtype)
        self._model = model = _llama.Model(path, self.options.n_gpu_layers, self.options.verbose)
        if self.options.chat_template is None:
            self._template = model.chat_template()
        elif self.options.chat_template.lower() == "none":
            self._template = None
        else:
            self._template = self.options.chat_template
        gpu = _llama.supports_gpu()
        threads = self.options.n_threads or _llama.default_threads()
        hardware = f"llama.cpp {'GPU' if gpu else 'CPU'} build, {threads} threads; {_llama.system_info()}"
        description = model.description()
        return ModelInfo(
            model=self.resolved.model_id,
            revision=self.spec.revision or _llama.fingerprint(path),
            dtype=description.split()[-1] if description else None,
            chat_template=self._template,
            library_versions={"llama_cpp_python": _llama.library_version()},
            hardware=hardware,
            extra={
                "path": str(path),
                "description": description,
                "gguf_name": model.meta("general.name"),
                "n_params": model.n_params,
                "n_ctx_train": model.n_ctx_train,
                "add_bos": model.add_bos,
                "n_parallel": self.options.n_parallel,
                "deterministic": self.options.deterministic,
                "n_gpu_layers": self.options.n_gpu_layers if gpu else 0,
            },
        )

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def _require_model(self) -> Any:
        if self._model is None:
            raise RuntimeError("backend llamacpp: open() was not called")
        return self._model

    # -- sampling settings ------------------------------------------------------------------

    def sampling(self, config: GenerationConfig) -> SamplingSettings:
        """Explicit values as given; under ``model_defaults``, the GGUF's recommended ones.

        Recent GGUF files carry ``general.sampling.*`` keys (the model's generation
        config); where they are absent the neutral values apply (temperature 1, no top-k,
        top-p or min-p). min-p stays off unless asked: create_completion's 0.05 default
        would quietly cut the tail of every distribution.
        """
        if not config.model_defaults:
            return SamplingSettings.from_config(config)
        model = self._require_model()
        found: dict[str, Any] = {}
        for key, cast in (
            ("temp", float),
            ("top_k", int),
            ("top_p", float),
            ("min_p", float),
            ("penalty_repeat", float),
        ):
            raw = model.meta(f"general.sampling.{key}")
            if raw is not None:
                try:
                    found[key] = cast(float(raw))
                except ValueError:
                    log.warning("backend llamacpp: ignoring general.sampling.%s=%r", key, raw)
        defaults = {
            "temperature": found.get("temp"),
            "top_k": found.get("top_k"),
            "top_p": found.get("top_p"),
            "min_p": found.get("min_p"),
            "repetition_penalty": found.get("penalty_repeat"),
            "defaults_from": "gguf general.sampling" if found else "none in the GGUF (neutral values)",
        }
        settings = SamplingSettings.from_config(config, **defaults)
        if settings.temperature <= 0.0:
            # model_defaults means "the model's settings with sampling on", as in v1.
            settings = settings.model_copy(update={"temperature": 1.0})
        return settings

    # -- rendering --------------------------------------------------------------------------

    def render(self, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
        """Apply the chat template once, count tokens, and truncate long prompts in the middle.

        BOS is added only when the model asks for it and the rendered text does not
        already start with it. Truncation keeps the head (BOS, system turn, the start of
        the question) and the tail (the end of the question and the assistant header, so
        the model still answers) and drops the middle; the flag records it.
        """
        model = self._require_model()
        from castillo_llamacpp import _llama

        bos_text, eos_text = model.token_text(model.bos), model.token_text(model.eos)
        out = []
        for prompt in prompts:
            if self._template is None:
                text = (
                    prompt.prompt_text
                    if not prompt.messages
                    else "\n\n".join(m["content"] for m in prompt.chat_messages())
                )
            else:
                text = _llama.render_template(self._template, prompt.chat_messages(), bos_text, eos_text)
            tokens = model.tokenize(text)
            if model.add_bos and model.bos >= 0 and (not tokens or tokens[0] != model.bos):
                tokens.insert(0, model.bos)
            if not tokens:
                raise BackendError(f"backend llamacpp: prompt {prompt.prompt_id} renders to no tokens")
            truncated = len(tokens) > max_prompt_tokens
            if truncated:
                head = max_prompt_tokens // 2
                tail = max_prompt_tokens - head
                tokens = tokens[:head] + tokens[len(tokens) - tail :]
            out.append(Rendered(input_size=len(tokens), truncated=truncated, payload=tuple(tokens)))
        return out

    def cut_prompts(self, texts: Sequence[str], max_tokens: int) -> list[str | None]:
        """CASTILLO v1's raw-text cut (``--truncation v1``) with the GGUF's tokenizer.

        As v1 with a Hugging Face tokenizer: the raw text's ids with the model's BOS (where
        it adds one) count towards the cap; a longer text becomes the text of its first
        ``max_tokens`` ids, control tokens (BOS) rendered as nothing.
        """
        model = self._require_model()
        out: list[str | None] = []
        for text in texts:
            tokens = model.tokenize(text)
            if model.add_bos and model.bos >= 0 and (not tokens or tokens[0] != model.bos):
                tokens.insert(0, model.bos)
            out.append(model.detokenize(tokens[:max_tokens]) if len(tokens) > max_tokens else None)
        return out

    # -- generation -------------------------------------------------------------------------

    def _context_for(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> tuple[Any, int]:
        """A context sized for this cell, and its number of prompt holders.

        Made lazily, in ``generate``: its size depends on the cell's caps and prompts.
        """
        from castillo_llamacpp import _llama

        model = self._require_model()
        slots = self.options.n_parallel
        holders = math.ceil(slots / max(config.n, 1)) + 1
        longest = max((len(r.rendered.payload) for r in requests), default=1)
        if self.options.n_ctx is not None:
            n_ctx = self.options.n_ctx
        else:
            # Every slot may run to the cap while the prompts of the running and waiting
            # samples sit in the cache; rounded up the way llama.cpp pads it.
            live_prompts = holders + math.ceil(slots / max(config.n, 1)) + 1
            n_ctx = slots * config.max_new_tokens + live_prompts * longest
            n_ctx = max(256, 256 * math.ceil(n_ctx / 256))
        n_batch = max(512, slots + 256)
        threads = self.options.n_threads or _llama.default_threads()
        ctx = self._ctx
        n_seq = slots + holders + 1  # + 1: the prompts' shared prefix (batched.py)
        if ctx is not None and (ctx.n_ctx < n_ctx or ctx.n_seq_max != n_seq):
            ctx.close()
            ctx = self._ctx = None
        if ctx is None:
            if longest + config.max_new_tokens > model.n_ctx_train > 0:
                log.warning(
                    "backend llamacpp: prompts of %d tokens + max_new_tokens %d exceed the %d positions the model "
                    "was trained on; its answers past that may degrade",
                    longest,
                    config.max_new_tokens,
                    model.n_ctx_train,
                )
            ctx = self._ctx = _llama.Context(model, n_ctx, n_seq, n_batch, threads)
        return ctx, holders

    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, config: GenerationConfig
    ) -> Iterator[PromptResult]:
        from castillo_llamacpp.batched import BatchedGenerator

        if not requests:
            return
        ctx, holders = self._context_for(requests, config)
        self.generator = BatchedGenerator(
            self._require_model(), ctx, self.options.n_parallel, holders, deterministic=self.options.deterministic
        )
        yield from self.generator.run(requests, settings, config.max_new_tokens)
