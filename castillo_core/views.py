"""CASTILLO v1's three dataset configs, computed from any castillo output.

- ``original``: every row, unchanged.
- ``degenerate``: the rows a detector flags, unchanged (v1: "partial text degeneration").
- ``sanitized``: every row except those left with no usable sample; in a flagged row the
  offending lengths are removed, mean, std and percentiles recomputed from what is left
  (:func:`castillo_core.stats.length_stats`, so exactly v1's numpy formulas) and
  ``longest_response`` set to ``"TEXT DEGENERATION"``.

The ``v1-length`` detector is v1's rule (``sanitize_dataset`` in v1's
``scripts/sanitize_dataset.py``), made relative to each row's cap: a row is degenerate when
its longest response reaches the cap (v1: >= 14,999 with ``max_new_tokens=15000``), or when
``output_std > 2 * output_mean`` and the longest exceeds 8,499/15,000 of the cap. Removal
follows v1 exactly: in a high-variance row every length above that threshold goes,
otherwise every length that reached the cap; a row with nothing left is dropped.

Any other detector name comes from a metric plugin through the registry (the core never
imports a plugin): the metric that declares the boolean response column
``degenerate_<name>``. Rows with per-response flags in the responses table use them; rows
without (a v1 import keeps one text per row, its longest response) run the metric on
``longest_response`` and remove that sample plus every sample that reached the cap.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castillo_core.errors import CastilloError
from castillo_core.schema import PERCENTILES_TYPE
from castillo_core.stats import length_stats

log = logging.getLogger(__name__)

VIEWS = ("original", "degenerate", "sanitized")
V1_DETECTOR = "v1-length"
DEGENERATION_TEXT = "TEXT DEGENERATION"
V1_CAP = 15_000
V1_HIGH_VARIANCE_LIMIT = 8_499  # v1's threshold with its cap of 15,000


class ViewError(CastilloError):
    """A view that cannot be computed (unknown detector, no cap, a foreign --to directory)."""


@dataclass
class Flags:
    """Per row: flagged or not, which samples (positions in ``output_sizes``) to remove."""

    degenerate: np.ndarray
    remove: list[np.ndarray | None]

    @property
    def dropped(self) -> np.ndarray:
        """Flagged rows with no sample left (v1 leaves them out of ``sanitized``)."""
        return np.array(
            [bool(d) and r is not None and bool(r.all()) for d, r in zip(self.degenerate, self.remove, strict=True)],
            dtype=bool,
        )


@dataclass
class ViewTables:
    """One view: its prompts and responses tables."""

    prompts: pa.Table
    responses: pa.Table


@dataclass
class ViewSummary:
    """Row counts of the three views, overall and per model."""

    detector: str
    to: str
    rows: dict[str, int] = field(default_factory=dict)
    per_model: dict[str, dict[str, int]] = field(default_factory=dict)


def high_variance_limit(cap: np.ndarray | int) -> np.ndarray:
    """v1's 8,499 scaled with the cap (8,499/15,000 of it, rounded down)."""
    return np.asarray(cap, dtype=np.int64) * V1_HIGH_VARIANCE_LIMIT // V1_CAP


def _caps(prompts: pa.Table, cap: int | None) -> np.ndarray:
    if cap is not None:
        return np.full(prompts.num_rows, cap, dtype=np.int64)
    if "max_new_tokens" not in prompts.column_names:
        raise ViewError("the prompts table has no max_new_tokens column; pass --cap (v1's is 15000)")
    column = prompts.column("max_new_tokens")
    if column.null_count:
        raise ViewError(f"{column.null_count} row(s) have no max_new_tokens (the cap); pass --cap (v1's is 15000)")
    return column.to_numpy().astype(np.int64)


def _sizes(prompts: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """All lengths flattened, and each row's offsets into them."""
    column = prompts.column("output_sizes").combine_chunks()
    if column.null_count:
        raise ViewError(f"{column.null_count} row(s) have no output_sizes")
    offsets = column.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    values = column.flatten().to_numpy().astype(np.int64)
    if np.any(np.diff(offsets) == 0):
        raise ViewError("a row has an empty output_sizes list; it has no samples to describe")
    return values, offsets


def v1_length_flags(prompts: pa.Table, cap: int | None = None) -> Flags:
    """v1's rule on stored numbers (v1's rounded mean and std for imported rows, as v1 did)."""
    if prompts.num_rows == 0:
        return Flags(np.zeros(0, dtype=bool), [])
    caps = _caps(prompts, cap)
    values, offsets = _sizes(prompts)
    starts = offsets[:-1]
    longest = np.maximum.reduceat(values, starts)
    mean = prompts.column("output_mean").to_numpy(zero_copy_only=False).astype(np.float64)
    std = prompts.column("output_std").to_numpy(zero_copy_only=False).astype(np.float64)
    capped_at = caps - 1
    limit = high_variance_limit(caps)
    hit_cap = longest >= capped_at
    high_variance = (std > 2 * mean) & (longest > limit)
    degenerate = hit_cap | high_variance
    remove: list[np.ndarray | None] = []
    for row in range(prompts.num_rows):
        if not degenerate[row]:
            remove.append(None)
            continue
        sizes = values[offsets[row] : offsets[row + 1]]
        remove.append(sizes > limit[row] if high_variance[row] else sizes >= capped_at[row])
    return Flags(degenerate, remove)


def _detector_metric(name: str, cap: int) -> Any:
    """The metric instance that provides the boolean response column ``degenerate_<name>``."""
    from castillo_core.contracts import MetricContext
    from castillo_core.plugins import get_plugins

    wanted = f"degenerate_{name.replace('-', '_')}"
    known = [V1_DETECTOR]
    for entry in get_plugins().entries("metric"):
        if not entry.available:
            continue
        metric = entry.cls(MetricContext(max_new_tokens=cap, n=1))
        names = {c.name: c.type for c in metric.response_columns()}
        known.extend(
            n.removeprefix("degenerate_").replace("_", "-")
            for n, t in names.items()
            if n.startswith("degenerate_") and t == "bool"
        )
        if names.get(wanted) == "bool":
            return metric
    raise ViewError(
        f"unknown detector {name!r}: no installed metric provides a boolean response column {wanted!r}. "
        f"Known detectors: {', '.join(dict.fromkeys(known))} (install castillo-metrics for `repetition`)"
    )


def text_flags(prompts: pa.Table, responses: pa.Table | None, name: str, cap: int | None = None) -> Flags:
    """A plugin detector's flags: per-response flags where stored, else on longest_response."""
    count = prompts.num_rows
    if count == 0:
        return Flags(np.zeros(0, dtype=bool), [])
    caps = _caps(prompts, cap)
    values, offsets = _sizes(prompts)
    column = f"degenerate_{name.replace('-', '_')}"
    degenerate = np.zeros(count, dtype=bool)
    remove: list[np.ndarray | None] = [None] * count
    stored = _stored_flags(prompts, responses, column, offsets)
    pending = [row for row in range(count) if stored[row] is None]
    for row in range(count):
        flags = stored[row]
        if flags is not None and flags.any():
            degenerate[row] = True
            remove[row] = flags
    if pending:
        texts = prompts.column("longest_response").to_pylist()
        for cap_value in np.unique(caps[pending]):
            rows = [r for r in pending if caps[r] == cap_value and texts[r] not in (None, DEGENERATION_TEXT)]
            if not rows:
                continue
            flagged = _score_texts([texts[r] for r in rows], values, offsets, rows, int(cap_value), name, column)
            for row, hit in zip(rows, flagged, strict=True):
                if not hit:
                    continue
                sizes = values[offsets[row] : offsets[row + 1]]
                mask = sizes >= cap_value - 1
                mask[int(np.argmax(sizes))] = True  # the longest response is the text judged
                degenerate[row] = True
                remove[row] = mask
    return Flags(degenerate, remove)


def _score_texts(
    texts: list[str], values: np.ndarray, offsets: np.ndarray, rows: list[int], cap: int, name: str, column: str
) -> np.ndarray:
    from castillo_core.contracts import ResponseBatch

    metric = _detector_metric(name, cap)
    tokens = np.array([values[offsets[r] : offsets[r + 1]].max() for r in rows], dtype=np.int64)
    batch = ResponseBatch(
        texts,
        tokens,
        ["length" if t >= cap - 1 else "stop" for t in tokens],
        np.arange(len(rows) + 1, dtype=np.int64),
        cap,
    )
    return np.asarray(metric.score(batch)[column], dtype=bool)


def _stored_flags(
    prompts: pa.Table, responses: pa.Table | None, column: str, offsets: np.ndarray
) -> list[np.ndarray | None]:
    """Per row, the stored per-response flags in ``output_sizes`` order, or None when absent."""
    out: list[np.ndarray | None] = [None] * prompts.num_rows
    if responses is None or responses.num_rows == 0 or column not in responses.column_names:
        return out
    keys = _row_keys(responses)
    flags = responses.column(column).to_numpy(zero_copy_only=False)
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    for row, key in enumerate(_row_keys(prompts)):
        indices = by_key.get(key)
        if indices is None or len(indices) != offsets[row + 1] - offsets[row]:
            continue
        values = flags[indices]
        if any(v is None for v in values):
            continue
        out[row] = np.asarray(values, dtype=bool)
    return out


def _row_keys(table: pa.Table) -> list[str]:
    """One key per row that ties a prompt row to its responses: sample id and config hash."""
    sample = table.column("sample_id").to_pylist()
    config = table.column("config_hash").to_pylist() if "config_hash" in table.column_names else [""] * len(sample)
    return [f"{s}\x00{c}" for s, c in zip(sample, config, strict=True)]


def detect(prompts: pa.Table, responses: pa.Table | None, detector: str, cap: int | None = None) -> Flags:
    """The flags of ``detector`` (``v1-length`` or a plugin detector such as ``repetition``)."""
    if detector == V1_DETECTOR:
        return v1_length_flags(prompts, cap)
    return text_flags(prompts, responses, detector, cap)


def sanitize(prompts: pa.Table, flags: Flags, cap: int | None = None) -> pa.Table:
    """v1's ``sanitized`` rows: offending lengths removed and the statistics recomputed."""
    keep_rows = ~flags.dropped
    changed = [r for r in range(prompts.num_rows) if keep_rows[r] and flags.degenerate[r]]
    if not changed:
        return prompts.filter(pa.array(keep_rows))
    caps = _caps(prompts, cap)
    sizes = prompts.column("output_sizes").to_pylist()
    kept_sizes = {}
    for row in changed:
        mask = flags.remove[row]
        kept = [s for s, gone in zip(sizes[row], mask, strict=True) if not gone] if mask is not None else sizes[row]
        kept_sizes[row] = kept
    stats = length_stats([kept_sizes[r] for r in changed])
    columns = {name: prompts.column(name) for name in prompts.column_names}
    updates: dict[str, tuple[Any, pa.DataType]] = {}

    def patch(name: str, values: Sequence[Any]) -> None:
        if name not in columns:
            return
        current = columns[name].to_pylist()
        for row, value in zip(changed, values, strict=True):
            current[row] = value
        updates[name] = (current, columns[name].type)

    patch("output_sizes", [kept_sizes[r] for r in changed])
    patch("output_mean", stats.mean.tolist())
    patch("output_std", stats.std.tolist())
    percentile_rows = [
        {k: float(stats.percentiles[k][i]) for k in ("p25", "p50", "p75", "p99")} for i in range(len(changed))
    ]
    patch("output_percentiles", percentile_rows)
    patch("longest_response", [DEGENERATION_TEXT] * len(changed))
    patch("n_samples", [len(kept_sizes[r]) for r in changed])
    patch("output_min", stats.minimum.astype(np.int64).tolist())
    patch("output_max", stats.maximum.astype(np.int64).tolist())
    if "finish_reasons" in columns:
        reasons = columns["finish_reasons"].to_pylist()
        kept_reasons = []
        for row in changed:
            mask = flags.remove[row]
            if reasons[row] is None or mask is None:
                kept_reasons.append(reasons[row])
            else:
                kept_reasons.append([x for x, gone in zip(reasons[row], mask, strict=True) if not gone])
        patch("finish_reasons", kept_reasons)
        capped = [
            sum(1 for x in kr if x == "length") if kr is not None else sum(1 for s in kept_sizes[r] if s >= caps[r] - 1)
            for r, kr in zip(changed, kept_reasons, strict=True)
        ]
    else:
        capped = [sum(1 for s in kept_sizes[r] if s >= caps[r] - 1) for r in changed]
    patch("n_length_capped", capped)
    arrays = []
    for name in prompts.column_names:
        if name in updates:
            values, type_ = updates[name]
            if name == "output_percentiles":
                type_ = columns[name].type if pa.types.is_struct(columns[name].type) else PERCENTILES_TYPE
            arrays.append(pa.array(values, type=type_))
        else:
            arrays.append(columns[name].combine_chunks())
    table = pa.Table.from_arrays(arrays, schema=prompts.schema)
    return table.filter(pa.array(keep_rows))


def _responses_of(responses: pa.Table, prompts: pa.Table, remove: dict[str, np.ndarray] | None = None) -> pa.Table:
    """The responses of ``prompts``' rows, less the samples in ``remove`` (by row key)."""
    if responses.num_rows == 0:
        return responses
    wanted = set(_row_keys(prompts))
    keys = _row_keys(responses)
    keep = np.array([k in wanted for k in keys], dtype=bool)
    if remove:
        seen: dict[str, int] = {}
        for index, key in enumerate(keys):
            position = seen.get(key, 0)
            seen[key] = position + 1
            mask = remove.get(key)
            if mask is not None and position < len(mask) and mask[position]:
                keep[index] = False
    return responses.filter(pa.array(keep))


def compute_views(
    prompts: pa.Table, responses: pa.Table, detector: str = V1_DETECTOR, cap: int | None = None
) -> tuple[dict[str, ViewTables], Flags]:
    """The three views of one output's tables, and the flags they came from."""
    flags = detect(prompts, responses, detector, cap)
    degenerate_rows = prompts.filter(pa.array(flags.degenerate))
    sanitized_rows = sanitize(prompts, flags, cap)
    keys = _row_keys(prompts)
    removed = {keys[r]: m for r, m in enumerate(flags.remove) if m is not None and flags.degenerate[r]}
    views = {
        "original": ViewTables(prompts, responses),
        "degenerate": ViewTables(degenerate_rows, _responses_of(responses, degenerate_rows)),
        "sanitized": ViewTables(sanitized_rows, _responses_of(responses, sanitized_rows, removed)),
    }
    return views, flags


def write_views(
    out: str | Path, to: str | Path | None = None, detector: str = V1_DETECTOR, cap: int | None = None
) -> ViewSummary:
    """Compute the three views of ``out`` and write each as a castillo output under ``to``."""
    from castillo_core.dataset import read_table
    from castillo_core.schema import responses_schema

    source = Path(out)
    prompts = read_table(source, "prompts")
    if prompts.num_rows == 0:
        raise ViewError(f"{source} holds no prompts rows; nothing to sanitize")
    responses = read_table(source, "responses") if (source / "responses").exists() else pa.table({})
    if responses.num_columns == 0:
        responses = responses_schema().empty_table()
    target = Path(to) if to is not None else source / "views" / detector
    views, _ = compute_views(prompts, responses, detector, cap)
    summary = ViewSummary(detector=detector, to=str(target))
    manifest = _source_manifest(source)
    for name, tables in views.items():
        _write_view(target / name, name, tables, detector, source, manifest)
        summary.rows[name] = tables.prompts.num_rows
        for model, count in _count_by(tables.prompts, "model").items():
            summary.per_model.setdefault(model, {v: 0 for v in VIEWS})[name] = count
    return summary


def _count_by(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table.column(column)).to_pylist()
    return {c["values"]: int(c["counts"]) for c in counts}


def _source_manifest(source: Path) -> dict[str, Any]:
    path = source / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; the views' manifests will not carry its cells", path)
        return {}


def _write_view(
    directory: Path, name: str, tables: ViewTables, detector: str, source: Path, manifest: dict[str, Any]
) -> None:
    """Write one view through :class:`Store`, replacing an earlier view of the same name only."""
    from castillo_core.store import Store

    if directory.exists():
        marker = directory / "manifest.json"
        try:
            old = json.loads(marker.read_text()) if marker.exists() else None
        except json.JSONDecodeError:
            old = None
        if not (isinstance(old, dict) and "view" in old):
            raise ViewError(f"{directory} exists and is not a castillo view; choose another --to")
        shutil.rmtree(directory)
    store = Store(directory)
    store.open()
    prompts, responses = tables.prompts, tables.responses
    if prompts.num_rows:
        by_key: dict[str, list[int]] = {}
        for index, key in enumerate(_row_keys(responses) if responses.num_rows else []):
            by_key.setdefault(key, []).append(index)
        groups = pc.binary_join_element_wise(
            prompts.column("model"), prompts.column("dataset"), prompts.column("config_hash"), "\x00"
        )
        for key in sorted(set(groups.to_pylist())):
            model, dataset, config_hash = key.split("\x00")
            rows = prompts.filter(pc.equal(groups, key))
            indices = [i for k in _row_keys(rows) for i in by_key.get(k, [])]
            part = responses.take(pa.array(indices, type=pa.int64()))
            metadata = {"config_hash": config_hash, "view": name, "detector": detector, "source": str(source)}
            store.write_part(model, dataset, config_hash, rows, part, metadata)
    new = store.read_manifest()
    new.update(view=name, detector=detector, source=str(source), cells=manifest.get("cells", {}))
    store.write_manifest(new)
