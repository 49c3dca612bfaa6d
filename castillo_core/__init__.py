"""castillo: response-length distributions of LLMs, measured.

The public API for plugin authors is what this module exports; plugins import nothing
else from castillo_core.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("castillo")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

from castillo_core.api.columns import (
    Column,
    ColumnRole,
    declared_columns,
    detectors,
    flag_column,
    flag_count_column,
)
from castillo_core.api.contracts import Backend, Corpus, Executor, ModelInfo, Predictor, Preset, View
from castillo_core.api.described import missing_requirements, parse_options
from castillo_core.api.errors import (
    BackendCrashed,
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
from castillo_core.api.hookspecs import hookimpl
from castillo_core.api.ids import model_name, prompt_id, prompt_seed, sample_id
from castillo_core.api.lazy import lazy_module
from castillo_core.api.metric import Metric, MetricContext, ResponseBatch
from castillo_core.api.records import (
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
from castillo_core.api.redact import redact
from castillo_core.api.rendering import (
    clean_up_spaces,
    cut_with_tokenizer,
    encode_prompt,
    has_chat_template,
    render_with_tokenizer,
    template_ids,
    v1_output_tokens,
)
from castillo_core.api.requests import build_requests
from castillo_core.api.v1 import (
    DEGENERATION_TEXT,
    V1_DETECTOR,
    V1_HIGH_VARIANCE_LIMIT,
    V1_MAX_NEW_TOKENS,
    V1_MAX_PROMPT_TOKENS,
    V1_N,
    high_variance_limit,
    v1_length_flags,
)

# Names whose modules load numpy or pyarrow (or the engine): imported on first use, so
# that listing plugins, which imports this module, stays fast.
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "castillo_core.engine.stats": ("LengthStats", "length_stats"),
    "castillo_core.engine.schema": (
        "PERCENTILES_TYPE",
        "SCHEMA_VERSION",
        "V1_COLUMNS",
        "prompts_schema",
        "responses_schema",
    ),
    "castillo_core.engine.store": ("Store", "atomic_write_bytes", "segment"),
    "castillo_core.engine.dataset": ("read_schema", "read_table", "summarize"),
    "castillo_core.engine.manifest": ("Manifest", "read_manifest"),
    "castillo_core.plugins.manager": ("get_plugins",),
    # the engine's public API, for executors and notebooks (see castillo_core.engine.engine)
    "castillo_core.engine.engine": ("Engine",),
    "castillo_core.engine.plan": ("Cell", "RunSpec", "config_hash", "load_spec"),
    "castillo_core.engine.prompts": ("PromptSet", "select_prompts"),
    "castillo_core.engine.runner": ("CellRunner", "OpenedModel", "RunnerSettings"),
    "castillo_core.engine.work": ("CellResult", "PendingCell", "RunSummary"),
    "castillo_core.engine.progress": ("Progress",),
    "castillo_core.engine.signals": ("StopFlag",),
    # castillo from Python (notebooks, pipelines)
    "castillo_core.library": ("Dataset", "open_dataset", "run"),
}
_LAZY = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'castillo_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


# fmt: off
__all__ = [
    "DEGENERATION_TEXT", "PERCENTILES_TYPE", "SCHEMA_VERSION", "V1_COLUMNS", "V1_DETECTOR",
    "V1_HIGH_VARIANCE_LIMIT", "V1_MAX_NEW_TOKENS", "V1_MAX_PROMPT_TOKENS", "V1_N", "Backend", "BackendCrashed",
    "BackendError", "BackendUnavailableError", "CastilloError", "Cell", "CellResult", "CellRunner", "Column",
    "ColumnRole", "Completion", "ConfigChangedError", "ConfigError", "Corpus", "CorpusError", "CorpusSelection",
    "Dataset", "Engine", "Executor", "FinishReason", "GenerationConfig", "GenerationRequest", "Interrupted",
    "LengthStats", "Manifest", "Metric", "MetricContext", "ModelInfo", "ModelSpec", "OpenedModel", "PendingCell",
    "PluginError", "Predictor", "Preset", "Progress", "Prompt", "PromptResult", "PromptSet", "Rejection",
    "Rendered", "ResponseBatch", "RunSpec", "RunSummary", "RunnerSettings", "SamplingSettings", "StopFlag",
    "Store", "StoreError", "UnknownNameError", "View", "__version__", "atomic_write_bytes", "build_requests",
    "clean_up_spaces", "config_hash", "cut_with_tokenizer", "declared_columns", "detectors", "encode_prompt",
    "flag_column", "flag_count_column", "get_plugins", "has_chat_template", "high_variance_limit", "hookimpl",
    "lazy_module", "length_stats", "load_spec", "missing_requirements", "model_name", "open_dataset",
    "parse_options", "prompt_id", "prompt_seed", "prompts_schema", "read_manifest", "read_schema", "read_table",
    "redact", "render_with_tokenizer", "responses_schema", "run", "sample_id", "segment", "select_prompts",
    "summarize", "template_ids", "v1_length_flags", "v1_output_tokens",
]
# fmt: on
