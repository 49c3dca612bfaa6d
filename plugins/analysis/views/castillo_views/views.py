"""CASTILLO v1's three dataset configs, computed from any castillo output.

- ``original``: every row, unchanged.
- ``degenerate``: the rows a detector flags, unchanged (v1: "partial text degeneration").
- ``sanitized``: every row except those left with no usable sample; in a flagged row the
  offending lengths are removed, mean, std and percentiles recomputed from what is left
  (:func:`castillo_core.length_stats`, so exactly v1's numpy formulas) and
  ``longest_response`` set to ``"TEXT DEGENERATION"``.

Which rows and samples a detector flags is :mod:`castillo_views.flags`' job.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castillo_core import (
    DEGENERATION_TEXT,
    PERCENTILES_TYPE,
    V1_DETECTOR,
    Manifest,
    Store,
    StoreError,
    flag_column,
    length_stats,
    read_manifest,
    read_table,
    responses_schema,
)
from castillo_views.flags import Flags, ViewError, _caps, _row_keys, detect
from castillo_views.names import name_problem, shown

log = logging.getLogger(__name__)

VIEWS = ("original", "degenerate", "sanitized")


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


def flag_responses(source: Path, detector: str) -> pa.Table:
    """The responses columns a detector's view needs (its stored flags), or an empty table.

    ``v1-length`` works on stored lengths alone; another detector's flags are read where
    the run stored them (rows without are scored on their text, see :mod:`castillo_views.flags`).
    """
    if detector != V1_DETECTOR and (source / "responses").exists():
        columns = ["sample_id", "prompt_id", "config_hash", flag_column(detector)]
        read = read_table(source, "responses", columns=columns)
        if read.num_columns:
            return read
    return responses_schema().empty_table()


def write_views(
    out: str | Path, to: str | Path | None = None, detector: str = V1_DETECTOR, cap: int | None = None
) -> ViewSummary:
    """Compute the three views of ``out`` and write each as a castillo output under ``to``.

    Every name a view's directories are built from (the detector, each model and dataset)
    is checked before anything is written: a name that cannot be a directory is one line.
    """
    source = Path(out)
    problem = name_problem(detector)
    if problem:
        raise ViewError(f"--detector {shown(detector)} is not a detector name: {problem}")
    prompts = read_table(source, "prompts")
    if prompts.num_rows == 0:
        raise ViewError(f"{source} holds no prompts rows; nothing to sanitize")
    check_names(prompts, source)
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


def check_names(prompts: pa.Table, source: Path) -> None:
    """Refuse a model or dataset name that cannot name a partition directory (one line naming it)."""
    for column in ("model", "dataset"):
        for value in pc.unique(prompts.column(column)).to_pylist():
            problem = name_problem(value)
            if problem:
                raise ViewError(
                    f"{source}: {column} {shown(value)} cannot name a directory of a view ({problem}); "
                    "nothing was written"
                )


def _count_by(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counts = pc.value_counts(table.column(column)).to_pylist()
    return {c["values"]: int(c["counts"]) for c in counts}


def _source_manifest(source: Path) -> Manifest:
    try:
        return read_manifest(source)
    except StoreError as exc:
        log.warning("%s; the views' manifests will not carry its cells", exc)
        return Manifest()


def _write_view(
    directory: Path, name: str, tables: ViewTables, detector: str, source: Path, manifest: Manifest
) -> None:
    """Write one view through :class:`castillo_core.Store`, replacing an earlier view of the same name only."""
    if directory.exists():
        try:
            old = read_manifest(directory) if (directory / "manifest.json").exists() else None
        except StoreError:
            old = None
        if old is None or old.view is None:
            raise ViewError(f"{directory} exists and is not a castillo view; choose another --to")
        shutil.rmtree(directory)
    store = Store(directory)
    with store.lock():
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
        new.view, new.detector, new.source, new.cells = name, detector, str(source), dict(manifest.cells)
        store.write_manifest(new)
