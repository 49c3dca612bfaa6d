"""Rescoring: compute (or recompute, or drop) metric columns over stored responses, no model needed.

``castillo rescore OUT`` applies a newly installed metric, or new options of one, to a
dataset; ``castillo run`` uses the same code to fill the columns a metric failed to compute
in earlier parts once the metric works. Each part is rewritten in place, file by file
atomically, with its metadata saying which metrics (and versions, options) it holds: a part
already holding the asked-for records is skipped, so an interrupted rescore resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from castillo_core.api.metric import ResponseBatch
from castillo_core.engine.manifest import now
from castillo_core.engine.metrics import MetricError, MetricSetting, score_all
from castillo_core.engine.schema import arrow_field, prompts_schema, responses_schema
from castillo_core.engine.store import Store, part_metadata

log = logging.getLogger(__name__)

_CORE = {
    "prompts": {f.name for f in prompts_schema()},
    "responses": {f.name for f in responses_schema()},
}


@dataclass
class RescoreSummary:
    """What a rescore did: parts rewritten, rows scored, parts it could not score and why."""

    out: str
    parts: int = 0
    prompts: int = 0
    responses: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    cells: set[str] = field(default_factory=set)


def stored_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """The metrics a part holds, by name, with their records (``None`` for parts written before records)."""
    held = meta.get("metrics") or {}
    if isinstance(held, list):  # parts written before castillo recorded options and versions
        return dict.fromkeys(held)
    return dict(held)


def rescore(
    out: str | Path,
    settings: Sequence[MetricSetting],
    drop: Sequence[str] = (),
    only_missing: bool = False,
    store: Store | None = None,
) -> RescoreSummary:
    """Bring every part of ``out`` to ``settings`` (and without ``drop``); see the module docstring.

    ``only_missing`` recomputes only metrics a part lacks (what ``castillo run`` repairs);
    otherwise a metric whose stored record (version, options) differs is recomputed too.
    """
    store = store or Store(out)
    summary = RescoreSummary(out=str(store.root))
    for part in store.prompt_parts():
        meta = part_metadata(part)
        held = stored_metrics(meta)
        todo = [s for s in settings if s.name not in held or (not only_missing and held[s.name] != s.record())]
        gone = [name for name in drop if name in held]
        if not todo and not gone:
            summary.unchanged += 1
            continue
        _rescore_part(store, part, meta, todo, gone, summary)
    return summary


def settle_records(
    store: Store, settings: Sequence[MetricSetting], drop: Sequence[str], summary: RescoreSummary
) -> None:
    """Record in the manifest what each cell's parts now hold, and what this rescore did.

    A cell's metrics record is set only when all its parts agree (a part skipped or an
    interrupted rescore leaves it as it was, and the next run still refuses to mix).
    """
    manifest = store.read_manifest()
    held: dict[str, list[dict[str, Any]]] = {}
    for part in store.prompt_parts():
        meta = part_metadata(part)
        if meta.get("config_hash"):
            held.setdefault(str(meta["config_hash"]), []).append(stored_metrics(meta))
    for config_hash, records in held.items():
        entry = manifest.cells.get(config_hash)
        if entry is not None and all(r == records[0] for r in records) and None not in records[0].values():
            entry.metrics = records[0]
    manifest.rescores.append(
        {
            "finished": now(),
            "metrics": {s.name: s.record() for s in settings},
            "dropped": list(drop),
            "parts": summary.parts,
            "prompts": summary.prompts,
            "skipped": summary.skipped[:100],
        }
    )
    store.write_manifest(manifest)


def _rescore_part(
    store: Store,
    part: Path,
    meta: dict[str, Any],
    todo: Sequence[MetricSetting],
    gone: Sequence[str],
    summary: RescoreSummary,
) -> None:
    name = str(part.relative_to(store.root))
    prompts = pq.read_table(part)
    responses = pq.read_table(store.responses_part(part))
    if todo and responses.num_rows == 0:
        summary.skipped.append(f"{name}: no responses stored (an import keeps one text per prompt)")
        return
    if todo and responses.column("text").null_count:
        summary.skipped.append(f"{name}: responses stored without their text (--no-text); nothing to score")
        return
    responses = _in_prompt_order(prompts, responses, name)
    held = stored_metrics(meta)
    columns = meta.get("metric_columns") or {}
    drop_names = {c for m in (*gone, *(s.name for s in todo)) for c in _columns_of(columns, m)}
    new_prompt_fields, new_response_fields, values = _score(prompts, responses, todo, name)
    drop_names |= {f.name for f in new_prompt_fields} | {f.name for f in new_response_fields}
    new_prompts = _rebuild(prompts, "prompts", drop_names, new_prompt_fields, values)
    new_responses = _rebuild(responses, "responses", drop_names, new_response_fields, values)
    for metric in gone:
        held.pop(metric, None)
        columns.pop(metric, None)
    for setting in todo:
        held[setting.name] = setting.record()
        columns[setting.name] = values["_columns"][setting.name]
    errors = {
        k: v for k, v in (meta.get("metric_errors") or {}).items() if k in held and k not in {s.name for s in todo}
    }
    metadata = {k: v for k, v in meta.items() if k not in {"schema_version", "metric_errors"}}
    metadata.update(metrics=held, metric_columns=columns, rescored=now())
    if errors:
        metadata["metric_errors"] = errors
    store.rewrite_part(part, new_prompts, new_responses, metadata)
    summary.parts += 1
    summary.prompts += prompts.num_rows
    summary.responses += responses.num_rows
    if meta.get("config_hash"):
        summary.cells.add(str(meta["config_hash"]))


def _columns_of(columns: dict[str, Any], metric: str) -> list[str]:
    entry = columns.get(metric) or {}
    return [*entry.get("responses", []), *entry.get("prompts", [])]


def _in_prompt_order(prompts: pa.Table, responses: pa.Table, name: str) -> pa.Table:
    """The responses grouped by prompt in the prompts part's row order, samples in index order."""
    keys = pc.binary_join_element_wise(responses.column("sample_id"), responses.column("config_hash"), "\x00")
    order = {
        k: i
        for i, k in enumerate(
            pc.binary_join_element_wise(prompts.column("sample_id"), prompts.column("config_hash"), "\x00").to_pylist()
        )
    }
    rank = np.array([order.get(k, -1) for k in keys.to_pylist()], dtype=np.int64)
    if (rank < 0).any():
        raise MetricError(
            f"part {name}: responses without a prompts row; run `castillo verify` (or move the part away)"
        )
    index = responses.column("sample_index").to_numpy(zero_copy_only=False)
    sorted_rows = np.lexsort((index, rank))
    counts = np.bincount(rank, minlength=prompts.num_rows)
    expected = prompts.column("n_samples").to_numpy(zero_copy_only=False)
    if not np.array_equal(counts, expected):
        raise MetricError(f"part {name}: responses do not match the prompts' n_samples; run `castillo verify`")
    return responses.take(pa.array(sorted_rows))


def _score(
    prompts: pa.Table, responses: pa.Table, todo: Sequence[MetricSetting], name: str
) -> tuple[list[pa.Field], list[pa.Field], dict[str, Any]]:
    """Score the part with ``todo``; the new fields of both tables and their values."""
    values: dict[str, Any] = {"_columns": {}}
    if not todo:
        return [], [], values
    caps = prompts.column("max_new_tokens").to_numpy(zero_copy_only=False)
    counts = prompts.column("n_samples").to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cap, n = int(caps[0]), int(counts[0]) if len(counts) else 1
    batch = ResponseBatch(
        responses.column("text").to_pylist(),
        responses.column("output_tokens").to_numpy(zero_copy_only=False).astype(np.int64),
        responses.column("finish_reason").to_pylist(),
        offsets,
        cap,
    )
    metrics = [(s, s.instantiate(cap, n)) for s in todo]
    response_values, prompt_values, failures = score_all(batch, metrics, prompts.num_rows)
    if failures:
        raise MetricError(f"{next(iter(failures.values()))} (rescoring part {name}; nothing of it was rewritten)")
    prompt_fields: list[pa.Field] = []
    response_fields: list[pa.Field] = []
    for setting, metric in metrics:
        response_cols, prompt_cols = metric.response_columns(), metric.prompt_columns()
        response_fields += [arrow_field(c) for c in response_cols]
        prompt_fields += [arrow_field(c) for c in prompt_cols]
        values["_columns"][setting.name] = {
            "responses": [c.name for c in response_cols],
            "prompts": [c.name for c in prompt_cols],
        }
    values.update(response_values)
    values.update(prompt_values)
    return prompt_fields, response_fields, values


def _rebuild(table: pa.Table, kind: str, drop: set[str], new: list[pa.Field], values: dict[str, Any]) -> pa.Table:
    """The table with ``drop`` removed and ``new`` added after the other metric columns."""
    trailer = [f for f in table.schema if f.name in {"config_hash", "castillo_version"}]
    body = [f for f in table.schema if f.name not in drop and f not in trailer]
    core = [f for f in body if f.name in _CORE[kind]]
    kept = [f for f in body if f.name not in _CORE[kind]]
    fields = [*core, *kept, *new, *trailer]
    arrays = []
    for f in fields:
        if f.name in values and f in new:
            arrays.append(_array(values[f.name], f.type))
        else:
            arrays.append(table.column(f.name).combine_chunks())
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _array(value: Any, type_: pa.DataType) -> pa.Array:
    from castillo_core.engine.rows import _array as to_arrow

    return to_arrow(value, type_)
