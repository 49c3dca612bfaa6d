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
)
"""The columns the report reads, besides the detectors' ``flag_count`` columns its metrics declare."""


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
class ReportData:
    """What a report shows: cells (model x dataset) with their aggregates and arrays."""

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
    provenance: list[dict[str, Any]] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0


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
    """Sorted model and dataset names, and each row's model and dataset index."""
    names = []
    codes = []
    for column in ("model", "dataset"):
        encoded = table.column(column).combine_chunks().dictionary_encode()
        labels = encoded.dictionary.to_pylist()
        order = sorted(range(len(labels)), key=lambda i: labels[i])
        remap = np.empty(len(labels), dtype=np.int64)
        remap[order] = np.arange(len(labels))
        names.append([labels[i] for i in order])
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


def degeneration_flags(
    table: pa.Table, declared: dict[str, str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per row and detector, 1.0 when degenerate, 0.0 when not, NaN when unknown.

    ``declared`` maps each detector to the per-prompt ``flag_count`` column a metric
    declared for it (:func:`castillo_core.detectors`); those counts are used where the run
    stored them. v1's length rule is always shown: rows without its count (imported v1
    data, runs without the metric) get it from :mod:`castillo_views.flags`, computed on
    their stored numbers, as v1 did.
    """
    from castillo_views.flags import v1_length_flags

    declared = dict(declared or {})
    flags: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    v1_column = declared.pop(V1_DETECTOR, None)
    v1 = _column(table, v1_column) if v1_column else np.full(table.num_rows, np.nan)
    v1 = np.where(np.isnan(v1), np.nan, (v1 > 0).astype(np.float64))
    missing = np.isnan(v1)
    caps = _column(table, "max_new_tokens")
    fallback = missing & ~np.isnan(caps)
    source = f"degeneration metric ({v1_column})" if v1_column and not missing.all() else ""
    if fallback.any():
        rows = np.flatnonzero(fallback)
        subset = table.select(["output_sizes", "output_mean", "output_std", "max_new_tokens"]).take(pa.array(rows))
        v1[rows] = v1_length_flags(subset).degenerate.astype(np.float64)
        rule = "v1's length rule on stored lengths"
        source = f"{source}; {rule} where absent" if source else rule
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
    n_models, n_datasets = len(models), len(datasets)
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
    truncated = _column(table, "prompt_truncated", fill=0.0)
    flags, sources = degeneration_flags(table, declared)

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
    truncated_counts = np.bincount(cell, weights=truncated, minlength=count)
    for key, matrix in matrices.items():
        matrix[prompts == 0] = np.nan
        matrices[key] = matrix.reshape(n_models, n_datasets)

    rejected_by_cell, rejected_rows, rejected_total = _rejections(manifest)
    cells = []
    for m, model in enumerate(models):
        for d, dataset in enumerate(datasets):
            i = m * n_datasets + d
            if prompts[i] == 0:
                continue
            row: dict[str, Any] = {
                "model": model,
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
            row["truncated"] = int(truncated_counts[i])
            row["rejected"] = rejected_by_cell.get((model, dataset), 0)
            cells.append(row)

    value_cell = np.repeat(cell, per_row)
    length_groups = _grouped(values, value_cell, count)
    cv_groups = _grouped(cv, cell, count)
    input_size = _column(table, "input_size")
    row_groups = _grouped(np.arange(table.num_rows), cell, count)
    rng = np.random.default_rng(0)
    length_boxes, cv_boxes, scatter = {}, {}, {}
    for m, model in enumerate(models):
        for d, dataset in enumerate(datasets):
            i = m * n_datasets + d
            if prompts[i] == 0:
                continue
            key = (model, dataset)
            box = _box(model, length_groups[i])
            if box is not None:
                length_boxes[key] = box
            box = _box(model, cv_groups[i])
            if box is not None:
                cv_boxes[key] = box
            rows = row_groups[i]
            if rows.size > max_points:
                rows = np.sort(rng.choice(rows, max_points, replace=False))
            scatter[key] = (input_size[rows], mean[rows])

    truncated_rows = _truncated_rows(table, truncated)
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
        provenance=provenance(table, manifest, metadata),
        truncated=truncated_rows,
        rejected=rejected_rows,
        rejected_total=rejected_total,
    )


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
