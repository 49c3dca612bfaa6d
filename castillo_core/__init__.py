"""castillo: response-length distributions of LLMs, measured.

The public API for plugin authors is what this module exports; plugins import nothing
else from castillo_core.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("castillo")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

from castillo_core.contracts import (
    Backend,
    Column,
    Corpus,
    Metric,
    MetricContext,
    ModelInfo,
    Predictor,
    Preset,
    ResponseBatch,
    missing_requirements,
    parse_options,
)
from castillo_core.errors import (
    BackendError,
    BackendUnavailableError,
    CastilloError,
    ConfigChangedError,
    ConfigError,
    CorpusError,
    Interrupted,
    PluginError,
    StoreError,
    UnknownNameError,
)
from castillo_core.hookspecs import hookimpl
from castillo_core.ids import model_name, prompt_id, prompt_seed, sample_id
from castillo_core.records import (
    Completion,
    CorpusSelection,
    FinishReason,
    GenerationConfig,
    GenerationRequest,
    ModelSpec,
    Prompt,
    PromptResult,
    Rejection,
    Rendered,
    SamplingSettings,
)
from castillo_core.rendering import encode_prompt, has_chat_template, render_with_tokenizer, template_ids


def __getattr__(name: str) -> object:
    """Statistics load numpy: imported on first use, so listing plugins stays fast."""
    if name in {"LengthStats", "length_stats"}:
        from castillo_core import stats

        return getattr(stats, name)
    raise AttributeError(f"module 'castillo_core' has no attribute {name!r}")


__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "CastilloError",
    "Column",
    "Completion",
    "ConfigChangedError",
    "ConfigError",
    "Corpus",
    "CorpusError",
    "CorpusSelection",
    "FinishReason",
    "GenerationConfig",
    "GenerationRequest",
    "Interrupted",
    "LengthStats",
    "Metric",
    "MetricContext",
    "ModelInfo",
    "ModelSpec",
    "PluginError",
    "Predictor",
    "Preset",
    "Prompt",
    "PromptResult",
    "Rejection",
    "Rendered",
    "ResponseBatch",
    "SamplingSettings",
    "StoreError",
    "UnknownNameError",
    "__version__",
    "encode_prompt",
    "has_chat_template",
    "hookimpl",
    "length_stats",
    "missing_requirements",
    "model_name",
    "parse_options",
    "prompt_id",
    "prompt_seed",
    "render_with_tokenizer",
    "sample_id",
    "template_ids",
]
