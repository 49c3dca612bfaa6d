"""The vLLM backend's options (``-B key=value``), validated by pydantic.

Each option says whether it can change the numbers. Those that only change speed or
memory are left out of the config hash (``UNHASHED``), so a run resumed on a machine
with more GPUs, another memory fraction or another batch size continues the same cell
instead of being refused as a different config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_DTYPES = {
    "auto": "auto",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


class VllmOptions(BaseModel):
    """Options of the ``vllm`` backend; every one maps onto ``vllm.LLM(...)`` or the submission."""

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is split over (speed only)")
    dtype: str | None = Field(None, description="auto, bf16, fp16, fp32 (--dtype takes precedence)")
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=1.0, description="share of GPU memory vLLM may take (speed only; vLLM's default if unset)"
    )
    max_model_len: int | None = Field(
        None, ge=1, description="context length: prompt + max_new_tokens must fit (model's own if unset)"
    )
    enforce_eager: bool = Field(False, description="no CUDA graphs / torch.compile: faster start, slower steps")
    quantization: str | None = Field(None, description="vLLM quantization method (awq, gptq, fp8, ...)")
    max_num_seqs: int | None = Field(None, ge=1, description="sequences per engine step (speed only)")
    kv_cache_gib: float | None = Field(
        None, gt=0.0, description="KV cache size in GiB instead of a memory fraction (speed only; CPU runs)"
    )
    chunked_prefill: bool | None = Field(
        None,
        description="split long prefills across steps (speed only); unset: vLLM's default on GPU, off on CPU, "
        "where vLLM's CPU build cannot rewind a seeded sampler after a split prefill",
    )
    in_process: bool = Field(
        False,
        description="run vLLM's engine core and worker in this process (speed only): starts in seconds instead "
        "of a minute on small machines; on a GPU the default separate processes overlap scheduling with compute",
    )
    fanout: Literal["n", "requests"] = Field(
        "n",
        description="'n': one SamplingParams(n=N, seed=s) per prompt, vLLM fans out sample i with seed s+i; "
        "'requests': N requests of n=1 seeded s+i, with a measured latency per sample (same numbers)",
    )
    window: int | None = Field(
        None,
        ge=1,
        description="samples kept in the engine at once (speed only); unset: twice max_num_seqs",
    )
    name: str | None = Field(None, description="model id to store instead of a local directory's name")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="further keyword arguments for vllm.LLM (hashed: they may change numbers)"
    )

    def vllm_dtype(self, spec_dtype: str | None) -> str:
        """The dtype string vLLM takes, from ``--dtype`` or this option (castillo's short names too)."""
        raw = (spec_dtype or self.dtype or "auto").lower()
        return _DTYPES.get(raw, raw)


# Options that change only speed or memory, or only the stored name (the model id is
# hashed on its own): left out of the config hash.
UNHASHED = frozenset(
    {
        "name",
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "enforce_eager",
        "max_num_seqs",
        "kv_cache_gib",
        "chunked_prefill",
        "in_process",
        "fanout",
        "window",
    }
)
