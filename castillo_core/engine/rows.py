"""Turn finished prompts into the two tables' Arrow rows: metrics, statistics, ids.

This is the engine's hot path (tens of thousands of responses per second), so it
works on whole batches of prompts: one flattened response batch for the metrics, one
vectorized statistics call, one Arrow array per column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from castillo_core.api.columns import Column
from castillo_core.api.ids import sample_id
from castillo_core.api.metric import Metric, ResponseBatch
from castillo_core.api.records import Completion, GenerationRequest, SamplingSettings
from castillo_core.api.rendering import SOURCE_PROMPT_ID
from castillo_core.engine.metrics import MetricSetting, score_all
from castillo_core.engine.schema import PERCENTILES_TYPE, prompts_schema, responses_schema
from castillo_core.engine.stats import length_stats


@dataclass(frozen=True)
class CellContext:
    """The per-cell constants every row carries."""

    model: str
    dataset: str
    backend: str
    model_revision: str | None
    settings: SamplingSettings
    n: int
    max_new_tokens: int
    max_prompt_tokens: int
    config_hash: str
    castillo_version: str
    keep_text: bool


@dataclass(frozen=True)
class Finished:
    """One prompt with all its completions, waiting to be written."""

    request: GenerationRequest
    completions: Sequence[Completion]
    gen_time: float
    input_size: int | None = None  # the backend's late count, over the rendered one

    @property
    def prompt_tokens(self) -> int:
        return self.request.rendered.input_size if self.input_size is None else self.input_size


def metric_columns(metrics: Sequence[Metric]) -> tuple[list[Column], list[Column]]:
    """The response and prompt columns all metrics add, in metric order."""
    response: list[Column] = []
    prompt: list[Column] = []
    for metric in metrics:
        response.extend(metric.response_columns())
        prompt.extend(metric.prompt_columns())
    return response, prompt


@dataclass(frozen=True)
class _Flat:
    """A batch of finished prompts flattened: responses of prompt ``j`` are ``offsets[j]:offsets[j+1]``."""

    finished: Sequence[Finished]
    counts: np.ndarray
    offsets: np.ndarray
    completions: list[Completion]
    texts: list[str]
    tokens: np.ndarray
    reasons: list[str]

    @classmethod
    def of(cls, finished: Sequence[Finished]) -> _Flat:
        counts = np.fromiter((len(f.completions) for f in finished), dtype=np.int64, count=len(finished))
        offsets = np.zeros(len(finished) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        completions = [c for f in finished for c in f.completions]
        tokens = np.fromiter((c.output_tokens for c in completions), dtype=np.int64, count=len(completions))
        texts = [c.text for c in completions]
        return cls(finished, counts, offsets, completions, texts, tokens, [c.finish_reason for c in completions])


def build_tables(
    finished: Sequence[Finished], ctx: CellContext, metrics: Sequence[tuple[MetricSetting, Metric]]
) -> tuple[pa.Table, pa.Table, dict[str, str]]:
    """The prompts and responses tables of a batch of finished prompts, and the metrics that failed.

    A failing metric's columns are left out (its one-line error is returned): the tables
    still hold every completion, so the caller can store them before stopping the run.
    """
    flat = _Flat.of(finished)
    batch = ResponseBatch(flat.texts, flat.tokens, flat.reasons, flat.offsets, ctx.max_new_tokens)
    response_values, prompt_values, failures = score_all(batch, metrics, len(finished))
    response_cols, prompt_cols = metric_columns([m for s, m in metrics if s.name not in failures])
    prompts = [f.request.prompt for f in finished]
    s = ctx.settings
    sample_ids = [sample_id(ctx.dataset, ctx.model, s.top_k, s.top_p, s.temperature, p.prompt_text) for p in prompts]
    prompt_columns = {**_prompt_columns(flat, ctx, sample_ids), **prompt_values, **_trailer(ctx, len(finished))}
    response_columns = {**_response_columns(flat, ctx, sample_ids), **response_values}
    response_columns["config_hash"] = _constant(ctx.config_hash, len(flat.completions))
    return (
        _table(prompt_columns, prompts_schema(prompt_cols)),
        _table(response_columns, responses_schema(response_cols)),
        failures,
    )


def _prompt_columns(flat: _Flat, ctx: CellContext, sample_ids: list[str]) -> dict[str, Any]:
    """v1's columns, then castillo's, of every prompt (metric columns and the trailer follow)."""
    finished, offsets, texts, counts = flat.finished, flat.offsets, flat.texts, flat.counts
    n = len(finished)
    prompts = [f.request.prompt for f in finished]
    if n and np.all(counts == counts[0]):  # rows of equal N form a 2-D block for the vectorized statistics
        sizes: Any = flat.tokens.reshape(n, int(counts[0]))
    else:
        sizes = [flat.tokens[offsets[i] : offsets[i + 1]] for i in range(n)]
    stats = length_stats(sizes)
    capped = np.fromiter((r == "length" for r in flat.reasons), dtype=np.int64, count=len(flat.reasons))
    starts = offsets[:-1]
    percentiles = pa.StructArray.from_arrays(
        [pa.array(stats.percentiles[k], type=pa.float64()) for k in ("p25", "p50", "p75", "p99")],
        fields=list(PERCENTILES_TYPE),
    )
    lists = pa.array(offsets, type=pa.int32())
    s, const = ctx.settings, _constant
    return {
        "sample_id": sample_ids,
        "prompt_id": [p.prompt_id for p in prompts],
        "model": const(ctx.model, n),
        "dataset": const(ctx.dataset, n),
        "prompt_text": [p.prompt_text for p in prompts],
        "longest_response": [texts[i] for i in (starts + stats.argmax)],
        "shortest_response": [texts[i] for i in (starts + stats.argmin)],
        "input_size": [f.prompt_tokens for f in finished],
        "output_sizes": pa.ListArray.from_arrays(lists, pa.array(flat.tokens, type=pa.int64())),
        "output_mean": stats.mean,
        "output_std": stats.std,
        "output_percentiles": percentiles,
        "top_k": const(s.top_k, n),
        "top_p": const(s.top_p, n),
        "temp": const(s.temperature, n),
        "category": [p.category for p in prompts],
        "gen_time": [f.gen_time for f in finished],
        "split": [p.split for p in prompts],
        "backend": const(ctx.backend, n),
        "model_revision": const(ctx.model_revision, n),
        "n_samples": counts,
        "max_new_tokens": const(ctx.max_new_tokens, n),
        "max_prompt_tokens": const(ctx.max_prompt_tokens, n),
        "prompt_truncated": [f.request.rendered.truncated for f in finished],
        "source_prompt_id": [p.metadata.get(SOURCE_PROMPT_ID) for p in prompts],
        "seed": [f.request.seed for f in finished],
        "finish_reasons": pa.ListArray.from_arrays(lists, pa.array(flat.reasons, type=pa.string())),
        "n_length_capped": np.add.reduceat(capped, starts) if n else np.empty(0, dtype=np.int64),
        "output_min": stats.minimum.astype(np.int64),
        "output_max": stats.maximum.astype(np.int64),
    }


def _trailer(ctx: CellContext, n: int) -> dict[str, Any]:
    return {"config_hash": _constant(ctx.config_hash, n), "castillo_version": _constant(ctx.castillo_version, n)}


def _response_columns(flat: _Flat, ctx: CellContext, sample_ids: list[str]) -> dict[str, Any]:
    """The responses table's own columns, one row per completion (metric columns follow)."""
    prompts = [f.request.prompt for f in flat.finished]
    take = pa.array(np.repeat(np.arange(len(prompts)), flat.counts), type=pa.int64())
    completions, count = flat.completions, len(flat.completions)
    return {
        "sample_id": pa.array(sample_ids, type=pa.string()).take(take),
        "prompt_id": pa.array([p.prompt_id for p in prompts], type=pa.string()).take(take),
        "model": _constant(ctx.model, count),
        "dataset": _constant(ctx.dataset, count),
        "split": pa.array([p.split for p in prompts], type=pa.string()).take(take),
        "sample_index": [c.sample_index for c in completions],
        "seed": [c.seed for c in completions],
        "output_tokens": flat.tokens,
        "finish_reason": flat.reasons,
        "text": flat.texts if ctx.keep_text else _constant(None, count),
        "latency": [c.latency for c in completions],
    }


def _array(value: Any, type_: pa.DataType) -> pa.Array:
    """An Arrow array; a float NaN (a metric's "not computed") is stored as null.

    Done with a numpy mask rather than ``from_pandas=True``, which imports pandas
    (a fifth of a second) into every run.
    """
    if pa.types.is_floating(type_):
        try:
            floats = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):  # a list holding None: Arrow reads None as null
            return pa.array(value, type=type_)
        nan = np.isnan(floats)
        return pa.array(floats, type=type_, mask=nan if nan.any() else None)
    return pa.array(value, type=type_)


def _constant(value: Any, count: int) -> pa.Array | list[Any]:
    return [value] * count


def _table(columns: dict[str, Any], schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        value = columns[f.name]
        arrays.append(value if isinstance(value, pa.Array) else _array(value, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)
