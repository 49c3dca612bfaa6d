"""The ``castillo-v1`` preset: CASTILLO v1's grid (13 models x 7 corpora), pinned to what v1 ran.

v1 (Perez-Ramirez et al., 2025) sampled 10 completions per prompt with each model's own
generation config (sampling on), capped at 15,000 new tokens, raw prompts cut to 2,500
tokens of the model's tokenizer, in bf16 for Gemma 3 and fp16 for the others. Model
entries carry no backend: ``--backend`` picks one (vllm on GPUs, transformers as v1 did).

What is pinned, so a run today decodes as v1 did whatever the hub's configs say now:

- **Sampling values**, per model, as v1 recorded them in its ``top_k``/``top_p``/``temp``
  columns (every row of a model x dataset file holds the same three): Qwen2.5 20/0.8/0.7,
  Llama 50/0.9/0.6, the Mistral family, Phi-4-mini and Gemma 3 50/1.0/1.0, except
  gemma-3-4b-it on Dolly, which v1 ran with 64/0.95/1.0 (Gemma 3's generation config gained
  ``top_k: 64, top_p: 0.95`` between v1's runs). They are the model's defaults under
  ``model_defaults`` (``sampling_defaults``): a flag such as ``--temperature`` still wins.
- **Values v1 applied but did not record**: Qwen2.5's generation config sets
  ``repetition_penalty: 1.05``, which HF ``generate`` applied; no other model's config set a
  penalty or min-p (v1's columns hold top-k/top-p/temperature only). These are pinned too
  (``repetition_penalty`` 1.05 for Qwen2.5, 1.0 and ``min_p`` 0.0 elsewhere) and stated here
  because v1's data cannot show them.
- **Truncation** ``v1`` (the raw text cut to 2,500 ids, then templated: v1's ids and texts)
  and **counting** ``v1`` (one more token for a stop on an end id other than the
  tokenizer's ``eos_token``: Gemma 3's ``<end_of_turn>``, Phi-4-mini's ``<|end|>``). See
  docs/v1.md for the evidence from v1's code and data.

Not pinned: model revisions (v1 recorded none) and the chat templates they carry.
"""

from __future__ import annotations

from typing import Any

from castillo_core import V1_MAX_NEW_TOKENS, V1_MAX_PROMPT_TOKENS, V1_N, Preset, hookimpl

# (top_k, top_p, temperature) as v1 recorded them, and the repetition penalty it applied unrecorded.
QWEN = {"top_k": 20, "top_p": 0.8, "temperature": 0.7, "min_p": 0.0, "repetition_penalty": 1.05}
LLAMA = {"top_k": 50, "top_p": 0.9, "temperature": 0.6, "min_p": 0.0, "repetition_penalty": 1.0}
HF_DEFAULTS = {"top_k": 50, "top_p": 1.0, "temperature": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
GEMMA3_LATER = {"top_k": 64, "top_p": 0.95}  # Gemma 3's later generation config (v1's gemma-3-4b x Dolly)

V1_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("meta-llama/Llama-3.2-1B-Instruct", "fp16", LLAMA),
    ("meta-llama/Llama-3.2-3B-Instruct", "fp16", LLAMA),
    ("meta-llama/Llama-3.1-8B-Instruct", "fp16", LLAMA),
    ("meta-llama/Llama-3.3-70B-Instruct", "fp16", LLAMA),
    ("mistralai/Mistral-7B-Instruct-v0.3", "fp16", HF_DEFAULTS),
    ("mistralai/Ministral-8B-Instruct-2410", "fp16", HF_DEFAULTS),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "fp16", HF_DEFAULTS),
    ("Qwen/Qwen2.5-7B-Instruct-1M", "fp16", QWEN),
    ("Qwen/Qwen2.5-14B-Instruct", "fp16", QWEN),
    ("Qwen/Qwen2.5-32B-Instruct", "fp16", QWEN),
    ("microsoft/Phi-4-mini-instruct", "fp16", HF_DEFAULTS),
    ("google/gemma-3-4b-it", "bf16", HF_DEFAULTS),
    ("google/gemma-3-12b-it", "bf16", HF_DEFAULTS),
)

# cells v1 ran with other values than the rest of their model's: model -> corpus -> values
V1_CELL_SAMPLING: dict[str, dict[str, dict[str, Any]]] = {
    "google/gemma-3-4b-it": {"dolly": GEMMA3_LATER},
}

V1_CORPORA: tuple[str, ...] = ("alpaca", "dolly", "sharegpt", "mbpp", "apps", "ds1000", "bigcodebench")


def _model_entry(model: str, dtype: str, sampling: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": model, "dtype": dtype, "sampling_defaults": dict(sampling)}
    if model in V1_CELL_SAMPLING:
        entry["sampling_defaults_by_corpus"] = {k: dict(v) for k, v in V1_CELL_SAMPLING[model].items()}
    return entry


CASTILLO_V1 = Preset(
    name="castillo-v1",
    description="CASTILLO v1's grid: 13 models x 7 corpora, N=10, v1's recorded sampling values, cap 15,000, "
    "v1 truncation and counting",
    models=tuple(_model_entry(model, dtype, sampling) for model, dtype, sampling in V1_MODELS),
    corpora=tuple({"name": name} for name in V1_CORPORA),
    generation={
        "n": V1_N,
        "model_defaults": True,
        "max_new_tokens": V1_MAX_NEW_TOKENS,
        "max_prompt_tokens": V1_MAX_PROMPT_TOKENS,
        "seed": 0,
        "truncation": "v1",
        "counting": "v1",
    },
    notes="Pass --backend; point --source at local copies of the corpora when the hub is not reachable. "
    "Sampling values are v1's recorded ones per model (gemma-3-4b-it x Dolly: 64/0.95/1.0, as v1 ran it); "
    "Qwen2.5's repetition_penalty 1.05 was applied by v1 but not recorded. `castillo run --preset castillo-v1 "
    "--backend vllm --dry-run` shows every cell's values.",
)


@hookimpl
def castillo_register_presets(register: Any) -> None:
    register(CASTILLO_V1)
