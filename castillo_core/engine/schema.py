"""The standardized Arrow schemas of the two tables.

``prompts`` starts with CASTILLO v1's columns, with v1's names and meanings, so the two
datasets concatenate; castillo's own columns follow, then the metric plugins' columns,
then ``config_hash`` and ``castillo_version``. ``responses`` holds one row per
completion, because length predictors need every sample, not only summaries.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from castillo_core.api.columns import Column, field_metadata

SCHEMA_VERSION = "1.0"

PERCENTILES_TYPE = pa.struct([(name, pa.float64()) for name in ("p25", "p50", "p75", "p99")])

V1_PROMPT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("prompt_text", pa.string()),
    pa.field("longest_response", pa.string()),
    pa.field("shortest_response", pa.string()),
    pa.field("input_size", pa.int64()),
    pa.field("output_sizes", pa.list_(pa.int64())),
    pa.field("output_mean", pa.float64()),
    pa.field("output_std", pa.float64()),
    pa.field("output_percentiles", PERCENTILES_TYPE),
    pa.field("top_k", pa.int64()),
    pa.field("top_p", pa.float64()),
    pa.field("temp", pa.float64()),
    pa.field("category", pa.string()),
    pa.field("gen_time", pa.float64()),
)

CASTILLO_PROMPT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("split", pa.string()),
    pa.field("backend", pa.string()),
    pa.field("model_revision", pa.string()),
    pa.field("n_samples", pa.int32()),
    pa.field("max_new_tokens", pa.int64()),
    pa.field("max_prompt_tokens", pa.int64()),
    pa.field("prompt_truncated", pa.bool_()),
    # --truncation v1: the id of the uncut prompt whose cut text this row holds (null when not cut)
    pa.field("source_prompt_id", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("finish_reasons", pa.list_(pa.string())),
    pa.field("n_length_capped", pa.int32()),
    pa.field("output_min", pa.int64()),
    pa.field("output_max", pa.int64()),
)

TRAILING_PROMPT_FIELDS: tuple[pa.Field, ...] = (
    pa.field("config_hash", pa.string()),
    pa.field("castillo_version", pa.string()),
)

RESPONSE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("split", pa.string()),
    pa.field("sample_index", pa.int32()),
    pa.field("seed", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("finish_reason", pa.string()),
    pa.field("text", pa.string()),
    pa.field("latency", pa.float64()),
)

TRAILING_RESPONSE_FIELDS: tuple[pa.Field, ...] = (pa.field("config_hash", pa.string()),)

_ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "list<int64>": pa.list_(pa.int64()),
    "list<float64>": pa.list_(pa.float64()),
    "list<bool>": pa.list_(pa.bool_()),
}


def arrow_field(column: Column) -> pa.Field:
    """The Arrow field of a metric's column; its declaration (role, description) goes into field metadata."""
    return pa.field(column.name, _ARROW_TYPES[column.type], metadata=field_metadata(column))


def _check_unique(fields: Sequence[pa.Field], table: str) -> None:
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            raise ValueError(f"column {f.name!r} appears twice in the {table} schema (two metrics share a name?)")
        seen.add(f.name)


def prompts_schema(metric_columns: Sequence[Column] = ()) -> pa.Schema:
    """The prompts table: v1 columns, castillo columns, metric aggregates, provenance."""
    fields = [
        *V1_PROMPT_FIELDS,
        *CASTILLO_PROMPT_FIELDS,
        *(arrow_field(c) for c in metric_columns),
        *TRAILING_PROMPT_FIELDS,
    ]
    _check_unique(fields, "prompts")
    return pa.schema(fields)


def responses_schema(metric_columns: Sequence[Column] = ()) -> pa.Schema:
    """The responses table: one row per completion, then the metrics' per-response columns."""
    fields = [*RESPONSE_FIELDS, *(arrow_field(c) for c in metric_columns), *TRAILING_RESPONSE_FIELDS]
    _check_unique(fields, "responses")
    return pa.schema(fields)


V1_COLUMNS: tuple[str, ...] = tuple(f.name for f in V1_PROMPT_FIELDS)
