"""The ``castillo-v1`` preset: CASTILLO v1's grid (13 models x 7 corpora).

v1 (Perez-Ramirez et al., 2025) sampled 10 completions per prompt with each model's own
generation config (sampling on), capped at 15,000 new tokens, prompts truncated to
2,500 tokens, in bf16 for Gemma 3 and fp16 for the others. Model entries carry no
backend: ``--backend`` picks one (vllm on GPUs, transformers as v1 did).
"""

from __future__ import annotations

from typing import Any

from castillo_core import V1_MAX_NEW_TOKENS, V1_MAX_PROMPT_TOKENS, V1_N, Preset, hookimpl

V1_MODELS: tuple[tuple[str, str], ...] = (
    ("meta-llama/Llama-3.2-1B-Instruct", "fp16"),
    ("meta-llama/Llama-3.2-3B-Instruct", "fp16"),
    ("meta-llama/Llama-3.1-8B-Instruct", "fp16"),
    ("meta-llama/Llama-3.3-70B-Instruct", "fp16"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "fp16"),
    ("mistralai/Ministral-8B-Instruct-2410", "fp16"),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "fp16"),
    ("Qwen/Qwen2.5-7B-Instruct-1M", "fp16"),
    ("Qwen/Qwen2.5-14B-Instruct", "fp16"),
    ("Qwen/Qwen2.5-32B-Instruct", "fp16"),
    ("microsoft/Phi-4-mini-instruct", "fp16"),
    ("google/gemma-3-4b-it", "bf16"),
    ("google/gemma-3-12b-it", "bf16"),
)

V1_CORPORA: tuple[str, ...] = ("alpaca", "dolly", "sharegpt", "mbpp", "apps", "ds1000", "bigcodebench")

CASTILLO_V1 = Preset(
    name="castillo-v1",
    description="CASTILLO v1's grid: 13 models x 7 corpora, N=10, each model's defaults, cap 15,000",
    models=tuple({"model": model, "dtype": dtype} for model, dtype in V1_MODELS),
    corpora=tuple({"name": name} for name in V1_CORPORA),
    generation={
        "n": V1_N,
        "model_defaults": True,
        "max_new_tokens": V1_MAX_NEW_TOKENS,
        "max_prompt_tokens": V1_MAX_PROMPT_TOKENS,
        "seed": 0,
    },
    notes="Pass --backend; point --source at local copies of the corpora when the hub is not reachable.",
)


@hookimpl
def castillo_register_presets(register: Any) -> None:
    register(CASTILLO_V1)
