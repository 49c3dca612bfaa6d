"""The numbers behind ``castillo report``: per-cell aggregates, per-prompt arrays, provenance.

Everything here is columnar numpy over the prompts table, grouped by an integer cell code
(``np.bincount`` with weights), so a 140,000-row dataset (v1's size) is summarized in well
under a second; the plots, not the statistics, dominate the report's time. Only the
columns the report draws are read, never the texts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from castillo_views.provenance import provenance

from castillo_core import V1_DETECTOR
from castillo_report.labels import model_labels, order_models
from castillo_report.sanitized import SanitizedRows, sanitized_rows

log = logging.getLogger(__name__)

COLUMNS = (
    "model",
    "dataset",
    "split",
    "prompt_id",
    "config_hash",
    "output_sizes",
    "output_mean",
    "output_std",
    "input_size",
    "n_samples",
    "n_length_capped",
    "max_new_tokens",
    "max_prompt_tokens",
    "prompt_truncated",
    "sample_id",
    "gen_time",
    "finish_reasons",
)
"""The columns the report reads (never the texts: :mod:`castillo_report.examples` reads the few
it shows), besides the detectors' ``flag_count`` columns its metrics declare."""


def strip_prompts(shape: str, models: int) -> int:
    """Prompts per cell whose N lengths the per-prompt figure draws: 40 for one cell, else about
    36 rows per panel shared by the models (3 to 12 each)."""
    return 40 if shape == "single" else max(3, min(12, 36 // max(models, 1)))


@dataclass
class BoxStats:
    """What one box of a box plot shows (matplotlib's ``bxp`` keys), precomputed in numpy."""

    label: str
    q1: float
    med: float
    q3: float
    whislo: float
    whishi: float
    mean: float
    maximum: float
    count: int

    def bxp(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "q1": self.q1,
            "med": self.med,
            "q3": self.q3,
            "whislo": self.whislo,
            "whishi": self.whishi,
            "mean": self.mean,
            "fliers": [self.maximum],
        }


@dataclass
class Strip:
    """One prompt's N response lengths (the per-prompt figure draws one row of dots per strip)."""

    model: str
    dataset: str
    prompt_id: str
    lengths: np.ndarray


@dataclass
class ReportData:
    """What a report shows: cells (model x dataset) with their aggregates and arrays.

    ``models`` are in the report's order (family, then size; :mod:`castillo_report.labels`),
    ``labels`` their short labels. ``sanitized`` holds the sanitized view's matrices (v1's
    length rule), empty when the view cannot be computed (``sanitized_note`` says why).
    """

    source: str
    rows: int
    models: list[str]
    datasets: list[str]
    cells: list[dict[str, Any]]
    matrices: dict[str, np.ndarray]
    length_boxes: dict[tuple[str, str], BoxStats]
    cv_boxes: dict[tuple[str, str], BoxStats]
    scatter: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]
    degeneration_sources: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    sanitized: dict[str, np.ndarray] = field(default_factory=dict)
    sanitized_note: str = ""
    strips: dict[tuple[str, str], list[Strip]] = field(default_factory=dict)
    lengths: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cvs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    caps: list[int] = field(default_factory=list)
    example_picks: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0

    @property
    def shape(self) -> str:
        """``single`` (one model x one dataset), ``line`` (one of them is one) or ``grid``."""
        if len(self.models) == 1 and len(self.datasets) == 1:
            return "single"
        return "line" if 1 in (len(self.models), len(self.datasets)) else "grid"


def _column(table: pa.Table, name: str, dtype: Any = np.float64, fill: float = np.nan) -> np.ndarray:
    """A column as a numpy array, nulls as ``fill`` (a missing column is all ``fill``)."""
    if name not in table.column_names:
        return np.full(table.num_rows, fill, dtype=np.float64)
    column = table.column(name)
    if column.null_count:
        column = column.cast(pa.float64()).fill_null(fill)
    return column.to_numpy(zero_copy_only=False).astype(dtype)


def _has_values(table: pa.Table, name: str) -> bool:
    return name in table.column_names and table.column(name).null_count < table.num_rows


def _codes(table: pa.Table) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Model names in the report's order, sorted dataset names, and each row's model and dataset index."""
    names = []
    codes = []
    for column in ("model", "dataset"):
        encoded = table.column(column).combine_chunks().dictionary_encode()
        labels = [str(v) for v in encoded.dictionary.to_pylist()]
        ordered = order_models(labels) if column == "model" else sorted(labels)
        position = {name: i for i, name in enumerate(ordered)}
        remap = np.array([position[name] for name in labels], dtype=np.int64)
        names.append(ordered)
        codes.append(remap[encoded.indices.to_numpy(zero_copy_only=False)])
    return names[0], names[1], codes[0], codes[1]


def _sizes(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    column = table.column("output_sizes").combine_chunks()
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float64)
    values = values[offsets[0] : offsets[-1]]
    return values, offsets - offsets[0]


def _box(label: str, values: np.ndarray) -> BoxStats | None:
    """Box from the quartiles, whiskers at p1 and p99, the mean, and the maximum as a dot."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    p1, q1, med, q3, p99 = np.percentile(values, [1, 25, 50, 75, 99])
    return BoxStats(label, q1, med, q3, p1, p99, float(values.mean()), float(values.max()), int(values.size))


def _grouped(values: np.ndarray, groups: np.ndarray, count: int) -> list[np.ndarray]:
    """Split ``values`` by group code with one stable argsort (no per-group boolean masks)."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(count + 1))
    ordered = values[order]
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(count)]


def rule_flags(table: pa.Table) -> np.ndarray:
    """Per row, v1's length rule (:func:`castillo_views.flags.v1_length_flags`, the views' own):
    1.0 when degenerate, 0.0 when not, NaN where it cannot judge (no cap, no lengths)."""
    from castillo_views.flags import v1_length_flags

    out = np.full(table.num_rows, np.nan)
    caps = _column(table, "max_new_tokens")
    sizes = table.column("output_sizes").combine_chunks()
    lengths = np.diff(sizes.offsets.to_numpy()) * ~np.asarray(sizes.is_null().to_numpy(zero_copy_only=False))
    rows = np.flatnonzero(~np.isnan(caps) & (lengths > 0))
    if rows.size:
        subset = table.select(["output_sizes", "output_mean", "output_std", "max_new_tokens"]).take(pa.array(rows))
        out[rows] = v1_length_flags(subset).degenerate.astype(np.float64)
    return out


def degeneration_flags(
    table: pa.Table, declared: dict[str, str] | None = None, rule: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per row and detector, 1.0 when degenerate, 0.0 when not, NaN when unknown.

    ``declared`` maps each detector to the per-prompt ``flag_count`` column a metric
    declared for it (:func:`castillo_core.detectors`); those counts are used where the run
    stored them. v1's length rule is always shown: rows without its count (imported v1
    data, runs without the metric) get :func:`rule_flags` (``rule``, when already
    computed), on their stored numbers, as v1 did.
    """
    declared = dict(declared or {})
    flags: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    v1_column = declared.pop(V1_DETECTOR, None)
    v1 = _column(table, v1_column) if v1_column else np.full(table.num_rows, np.nan)
    v1 = np.where(np.isnan(v1), np.nan, (v1 > 0).astype(np.float64))
    missing = np.isnan(v1)
    source = f"degeneration metric ({v1_column})" if v1_column and not missing.all() else ""
    if missing.any():
        rule = rule_flags(table) if rule is None else rule
        fallback = missing & ~np.isnan(rule)
        if fallback.any():
            v1[fallback] = rule[fallback]
            what = "v1's length rule on stored lengths"
            source = f"{source}; {what} where absent" if source else what
    flags[V1_DETECTOR] = v1
    sources[V1_DETECTOR] = source or "unknown (no cap recorded)"
    for detector, column in sorted(declared.items()):
        if _has_values(table, column):
            counts = _column(table, column)
            flags[detector] = np.where(np.isnan(counts), np.nan, (counts > 0).astype(np.float64))
            sources[detector] = f"degeneration metric ({column})"
    return flags, sources


def _cell_means(values: np.ndarray, cells: np.ndarray, count: int) -> np.ndarray:
    """Mean of ``values`` per cell, NaNs left out; NaN for a cell with no value."""
    valid = ~np.isnan(values)
    sums = np.bincount(cells[valid], weights=values[valid], minlength=count)
    counts = np.bincount(cells[valid], minlength=count)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _recorded(table: pa.Table, name: str) -> np.ndarray:
    """Per row, whether ``name`` holds a value (False everywhere when the column is absent)."""
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return ~np.asarray(table.column(name).is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _cell_range(values: np.ndarray, cell: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value per cell (NaN where a cell has none)."""
    low = np.full(count, np.inf)
    high = np.full(count, -np.inf)
    valid = ~np.isnan(values)
    np.minimum.at(low, cell[valid], values[valid])
    np.maximum.at(high, cell[valid], values[valid])
    return np.where(np.isfinite(low), low, np.nan), np.where(np.isfinite(high), high, np.nan)


def _setting(low: float, high: float) -> str | None:
    """A setting that may differ between a cell's rows, as text: ``100`` or ``100–200``; None if absent."""
    if np.isnan(low):
        return None
    return f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"


def _sanitized_matrices(
    rows: SanitizedRows, cell: np.ndarray, count: int, prompts: np.ndarray, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Per cell, the sanitized view's prompts, mean length, mean std, mean CV and capped share."""
    kept = rows.kept & rows.known
    mean = np.where(kept, rows.mean, np.nan)
    std = np.where(kept, rows.std, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, std / mean, np.nan)
    capped_known = kept & ~np.isnan(rows.capped)
    hits = np.bincount(cell[capped_known], weights=rows.capped[capped_known], minlength=count)
    total = np.bincount(cell[capped_known], weights=rows.samples[capped_known], minlength=count)
    unknown = np.bincount(cell, weights=~rows.known, minlength=count) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        matrices = {
            "prompts": np.bincount(cell, weights=kept, minlength=count).astype(np.float64),
            "mean_length": _cell_means(mean, cell, count),
            "mean_std": _cell_means(std, cell, count),
            "mean_cv": _cell_means(cv, cell, count),
            "share_capped": np.where(total > 0, hits / np.maximum(total, 1), np.nan),
        }
    for key, matrix in matrices.items():
        matrix[(prompts == 0) | unknown] = np.nan
        matrices[key] = matrix.reshape(shape)
    return matrices


def _strips(
    table: pa.Table,
    values: np.ndarray,
    offsets: np.ndarray,
    std: np.ndarray,
    cell: np.ndarray,
    count: int,
    per_cell: int,
) -> dict[int, list[tuple[str, np.ndarray]]]:
    """Per cell code, the ``per_cell`` prompts with the widest spread (largest std) and their lengths."""
    spread = np.where(np.isnan(std), -1.0, std)
    order = np.lexsort((np.arange(cell.size), -spread, cell))
    bounds = np.searchsorted(cell[order], np.arange(count + 1))
    chosen = np.concatenate([order[bounds[i] : min(bounds[i] + per_cell, bounds[i + 1])] for i in range(count)])
    ids = table.column("prompt_id").take(pa.array(chosen)).to_pylist() if "prompt_id" in table.column_names else []
    out: dict[int, list[tuple[str, np.ndarray]]] = {}
    for position, row in enumerate(chosen):
        prompt = str(ids[position]) if ids and ids[position] is not None else f"row {row}"
        out.setdefault(int(cell[row]), []).append((prompt, values[offsets[row] : offsets[row + 1]]))
    return out


def _example_picks(
    table: pa.Table, values: np.ndarray, offsets: np.ndarray, cell: np.ndarray, count: int
) -> dict[int, list[tuple[str, int, float]]]:
    """Per cell code: (kind, row, tokens) of the row holding its shortest and its longest response."""
    per_row = np.diff(offsets)
    has = per_row > 0
    shortest = np.full(table.num_rows, np.inf)
    longest = np.full(table.num_rows, -np.inf)
    if has.any():
        starts = offsets[:-1][has]
        shortest[has] = np.minimum.reduceat(values, starts)
        longest[has] = np.maximum.reduceat(values, starts)
    picks: dict[int, list[tuple[str, int, float]]] = {}
    for kind, key, sign in (("shortest", shortest, 1.0), ("longest", longest, -1.0)):
        order = np.lexsort((sign * key, cell))
        bounds = np.searchsorted(cell[order], np.arange(count + 1))
        for i in range(count):
            if bounds[i] < bounds[i + 1] and np.isfinite(key[order[bounds[i]]]):
                row = int(order[bounds[i]])
                picks.setdefault(i, []).append((kind, row, float(key[row])))
    return picks


def compute(
    table: pa.Table,
    source: str,
    manifest: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    max_points: int = 2000,
    declared: dict[str, str] | None = None,
) -> ReportData:
    """Every number the report shows, from the prompts table (only :data:`COLUMNS`)."""
    models, datasets, model_code, dataset_code = _codes(table)
    labels = model_labels(models)
    n_models, n_datasets = len(models), len(datasets)
    shape = "single" if n_models == n_datasets == 1 else "line" if 1 in (n_models, n_datasets) else "grid"
    count = n_models * n_datasets
    cell = model_code * n_datasets + dataset_code
    mean = _column(table, "output_mean")
    std = _column(table, "output_std")
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, std / mean, np.nan)
    values, offsets = _sizes(table)
    per_row = np.diff(offsets)
    samples = _column(table, "n_samples")
    samples = np.where(np.isnan(samples), per_row, samples)
    capped = _column(table, "n_length_capped")
    caps = _column(table, "max_new_tokens")
    if np.isnan(capped).any():  # rows that did not record it: v1's rule, a length >= cap - 1
        row_of_value = np.repeat(np.arange(table.num_rows), per_row)
        hits = np.bincount(row_of_value, weights=values >= caps[row_of_value] - 1, minlength=table.num_rows)
        capped = np.where(np.isnan(capped) & ~np.isnan(caps), hits, capped)
    truncated = _column(table, "prompt_truncated")
    rule = rule_flags(table)
    flags, sources = degeneration_flags(table, declared, rule)

    prompts = np.bincount(cell, minlength=count)
    responses = np.bincount(cell, weights=samples, minlength=count)
    capped_known = ~np.isnan(capped)
    capped_hits = np.bincount(cell[capped_known], weights=capped[capped_known], minlength=count)
    capped_total = np.bincount(cell[capped_known], weights=samples[capped_known], minlength=count)
    with np.errstate(divide="ignore", invalid="ignore"):
        share_capped = np.where(capped_total > 0, capped_hits / np.maximum(capped_total, 1), np.nan)
    matrices = {
        "mean_length": _cell_means(mean, cell, count),
        "mean_std": _cell_means(std, cell, count),
        "mean_cv": _cell_means(cv, cell, count),
        "share_capped": share_capped,
    }
    for name, flag in flags.items():
        matrices[f"degeneration_{name}"] = _cell_means(flag, cell, count)
    truncated_known = np.bincount(cell, weights=~np.isnan(truncated), minlength=count)
    truncated_counts = np.bincount(cell, weights=np.nan_to_num(truncated), minlength=count)
    for key, matrix in matrices.items():
        matrix[prompts == 0] = np.nan
        matrices[key] = matrix.reshape(n_models, n_datasets)

    clean = sanitized_rows(table, offsets, mean, std, samples, capped, rule)
    sanitized = _sanitized_matrices(clean, cell, count, prompts, (n_models, n_datasets)) if clean else {}
    recorded = {name: _recorded(table, name) for name in ("gen_time", "finish_reasons", "max_prompt_tokens")}
    gen_time = _column(table, "gen_time")
    gen_known = ~np.isnan(gen_time)
    gen_seconds = np.bincount(cell[gen_known], weights=gen_time[gen_known], minlength=count)
    gen_rows = np.bincount(cell, weights=gen_known, minlength=count)
    totals = np.concatenate([[0.0], np.cumsum(values)])
    row_tokens = totals[offsets[1:]] - totals[offsets[:-1]]
    gen_tokens = np.bincount(cell[gen_known], weights=row_tokens[gen_known], minlength=count)
    finish_known = np.bincount(cell, weights=recorded["finish_reasons"], minlength=count)
    cap_low, cap_high = _cell_range(caps, cell, count)
    prompt_cap_low, prompt_cap_high = _cell_range(_column(table, "max_prompt_tokens"), cell, count)

    rejected_by_cell, rejected_rows, rejected_total = _rejections(manifest)
    cells = []
    for m, model in enumerate(models):
        for d, dataset in enumerate(datasets):
            i = m * n_datasets + d
            if prompts[i] == 0:
                continue
            row: dict[str, Any] = {
                "model": model,
                "label": labels[model],
                "dataset": dataset,
                "prompts": int(prompts[i]),
                "responses": int(responses[i]),
                "mean_length": _num(matrices["mean_length"][m, d]),
                "mean_std": _num(matrices["mean_std"][m, d]),
                "mean_cv": _num(matrices["mean_cv"][m, d]),
                "share_capped": _num(matrices["share_capped"][m, d]),
            }
            for name in flags:
                row[f"degeneration_{name}"] = _num(matrices[f"degeneration_{name}"][m, d])
            for key in ("prompts", "mean_length", "mean_std", "mean_cv", "share_capped"):
                value = _num(sanitized[key][m, d]) if sanitized else None
                row[f"sanitized_{key}"] = int(value) if key == "prompts" and value is not None else value
            row["truncated"] = int(truncated_counts[i]) if truncated_known[i] else None
            row["rejected"] = rejected_by_cell.get((model, dataset), 0)
            row["max_new_tokens"] = _setting(cap_low[i], cap_high[i])
            row["max_prompt_tokens"] = _setting(prompt_cap_low[i], prompt_cap_high[i])
            row["gen_time"] = float(gen_seconds[i]) if gen_rows[i] else None
            row["tokens_per_second"] = float(gen_tokens[i] / gen_seconds[i]) if gen_seconds[i] > 0 else None
            row["capped_from"] = "finish reasons" if finish_known[i] == prompts[i] else "lengths >= cap - 1 (v1's rule)"
            row["not_recorded"] = [
                name
                for name, missing in (
                    ("gen_time", row["gen_time"] is None),
                    ("finish_reasons", finish_known[i] == 0),
                    ("max_new_tokens", row["max_new_tokens"] is None),
                    ("max_prompt_tokens", row["max_prompt_tokens"] is None),
                    ("prompt_truncated", row["truncated"] is None),
                )
                if missing
            ]
            cells.append(row)

    value_cell = np.repeat(cell, per_row)
    length_groups = _grouped(values, value_cell, count)
    cv_groups = _grouped(cv, cell, count)
    input_size = _column(table, "input_size")
    row_groups = _grouped(np.arange(table.num_rows), cell, count)
    strips = _strips(table, values, offsets, std, cell, count, strip_prompts(shape, n_models))
    picks = _example_picks(table, values, offsets, cell, count)
    picked_rows = np.array(sorted({row for found in picks.values() for _, row, _ in found}), dtype=np.int64)
    keys_of = {}
    if picked_rows.size:
        found = table.select([c for c in ("sample_id", "config_hash") if c in table.column_names])
        found = found.take(pa.array(picked_rows)).to_pylist()
        keys_of = dict(zip(picked_rows.tolist(), found, strict=True))
    if shape == "single" and clean is not None:
        kept_values = values[clean.keep_values & np.repeat(clean.kept & clean.known, per_row)]
    rng = np.random.default_rng(0)
    length_boxes, cv_boxes, scatter, strip_map, lengths, cvs, example_picks = {}, {}, {}, {}, {}, {}, []
    for m, model in enumerate(models):
        for d, dataset in enumerate(datasets):
            i = m * n_datasets + d
            if prompts[i] == 0:
                continue
            key = (model, dataset)
            box = _box(labels[model], length_groups[i])
            if box is not None:
                length_boxes[key] = box
            box = _box(labels[model], cv_groups[i])
            if box is not None:
                cv_boxes[key] = box
            rows = row_groups[i]
            if rows.size > max_points:
                rows = np.sort(rng.choice(rows, max_points, replace=False))
            scatter[key] = (input_size[rows], mean[rows])
            strip_map[key] = [Strip(model, dataset, p, v) for p, v in strips.get(i, [])]
            if shape == "single":
                lengths[key] = (length_groups[i], kept_values if clean is not None else np.empty(0))
                cvs[key] = cv_groups[i]
            for kind, row, size in picks.get(i, []):
                ids = keys_of.get(row, {})
                example_picks.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "kind": kind,
                        "tokens": int(size),
                        "sample_id": ids.get("sample_id"),
                        "config_hash": ids.get("config_hash"),
                    }
                )

    truncated_rows = _truncated_rows(table, np.nan_to_num(truncated))
    return ReportData(
        source=source,
        rows=table.num_rows,
        models=models,
        datasets=datasets,
        cells=cells,
        matrices=matrices,
        length_boxes=length_boxes,
        cv_boxes=cv_boxes,
        scatter=scatter,
        degeneration_sources=sources,
        labels=labels,
        sanitized=sanitized,
        sanitized_note=_sanitized_note(clean, caps),
        strips=strip_map,
        lengths=lengths,
        cvs=cvs,
        caps=sorted({int(c) for c in np.unique(caps[~np.isnan(caps)])}),
        example_picks=example_picks,
        provenance=provenance(table, manifest, metadata),
        truncated=truncated_rows,
        rejected=rejected_rows,
        rejected_total=rejected_total,
    )


def _sanitized_note(rows: SanitizedRows | None, caps: np.ndarray) -> str:
    if rows is None:
        return "not available: no row records its cap (max_new_tokens), which v1's length rule needs"
    note = f"{rows.flagged:,} prompt(s) flagged by v1's length rule"
    if not rows.known.all():
        note += f"; {int((~rows.known).sum()):,} row(s) without a recorded cap or lengths are left out"
    return note


def _num(value: float) -> float | None:
    """A JSON-friendly float: None for NaN."""
    return None if value is None or np.isnan(value) else float(value)


def _truncated_rows(table: pa.Table, truncated: np.ndarray) -> list[dict[str, Any]]:
    rows = np.flatnonzero(truncated > 0)
    if rows.size == 0:
        return []
    names = [c for c in ("model", "dataset", "split", "prompt_id", "input_size", "max_prompt_tokens")]
    names = [c for c in names if c in table.column_names]
    return table.select(names).take(pa.array(rows)).to_pylist()


def _rejections(manifest: dict[str, Any]) -> tuple[dict[tuple[str, str], int], list[dict[str, Any]], int]:
    """Rejected corpus records per cell, from the manifest (runs store up to 100 per cell)."""
    by_cell: dict[tuple[str, str], int] = {}
    rows: list[dict[str, Any]] = []
    total = 0
    for cell in manifest.get("cells", {}).values():
        count = int(cell.get("rejected") or 0)
        if not count:
            continue
        key = (str(cell.get("model")), str(cell.get("dataset")))
        by_cell[key] = by_cell.get(key, 0) + count
        total += count
        for record in cell.get("rejected_records") or []:
            rows.append({"model": key[0], **{k: record.get(k) for k in ("dataset", "source", "index", "reason")}})
    return by_cell, rows, total
