"""Reading a castillo output back: the two tables as Arrow, and per-cell summaries.

Parts written by different runs may carry different metric columns; the schemas are
unified (missing columns read as nulls) so one call reads the whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from castillo_core.api.errors import StoreError


def _parts(root: Path, table: str) -> list[Path]:
    base = root / table
    parts = sorted(
        p for p in base.rglob("part-*.parquet") if not any(s.startswith((".", "_")) for s in p.relative_to(root).parts)
    )
    if table == "responses":  # a live writer renames a part's responses in first: wait for its prompts
        parts = [p for p in parts if (root / "prompts" / p.relative_to(base)).exists()]
    return parts


def _check(root: Path, table: str) -> None:
    """The output exists, holds ``table``, and passes the store's cheap integrity checks."""
    from castillo_core.engine.store import Store

    if not (root / table).exists():
        if not root.exists():
            raise StoreError(f"{root} does not exist")
        raise StoreError(f"{root} holds no {table} table (is it a castillo output directory?)")
    Store(root).check()


def _unified_schema(root: Path, table: str, parts: list[Path]) -> pa.Schema:
    try:
        schemas = [pq.read_schema(p) for p in parts]
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"a part of {root / table} cannot be read: {exc}") from None
    # field metadata (metric declarations, see castillo_core.declared_columns) is kept
    return pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")


def read_schema(out: str | Path, table: str = "prompts") -> pa.Schema:
    """The schema of one table of an output, unified over its parts, without reading any row.

    Its fields carry the metrics' column declarations: ``declared_columns(schema)`` lists them.
    """
    root = Path(out)
    _check(root, table)
    parts = _parts(root, table)
    return _unified_schema(root, table, parts) if parts else pa.schema([])


def read_table(
    out: str | Path, table: str = "prompts", columns: Sequence[str] | None = None, filter: Any = None
) -> pa.Table:
    """Read one table of an output directory (every part, schemas unified)."""
    root = Path(out)
    _check(root, table)
    parts = _parts(root, table)
    if not parts:
        return pa.table({})
    schema = _unified_schema(root, table, parts)
    dataset = ds.dataset([str(p) for p in parts], schema=schema, format="parquet")
    wanted = [c for c in columns if c in schema.names] if columns is not None else None
    return dataset.to_table(columns=wanted, filter=filter)


def summarize(prompts: pa.Table) -> list[dict[str, Any]]:
    """Per model x dataset: prompts, mean length, mean std, mean CV, share capped."""
    if prompts.num_rows == 0:
        return []
    cols = {name: prompts.column(name) for name in ("model", "dataset", "output_mean", "output_std")}
    keys = pc.binary_join_element_wise(cols["model"], cols["dataset"], "\x00").to_numpy(zero_copy_only=False)
    mean = cols["output_mean"].to_numpy(zero_copy_only=False).astype(np.float64)
    std = cols["output_std"].to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, std / mean, np.nan)
    capped = _capped(prompts)
    rows = []
    for key in sorted(set(keys.tolist())):
        mask = keys == key
        model, dataset = key.split("\x00")
        row = {
            "model": model,
            "dataset": dataset,
            "prompts": int(mask.sum()),
            "mean_length": float(np.nanmean(mean[mask])),
            "mean_std": float(np.nanmean(std[mask])),
            "mean_cv": float(np.nanmean(cv[mask])) if np.any(~np.isnan(cv[mask])) else float("nan"),
        }
        if capped is not None:
            hits, total = capped
            row["share_capped"] = float(hits[mask].sum() / max(total[mask].sum(), 1))
        rows.append(row)
    return rows


def _capped(prompts: pa.Table) -> tuple[np.ndarray, np.ndarray] | None:
    names = prompts.column_names
    if "n_length_capped" in names and "n_samples" in names:
        hits = prompts.column("n_length_capped").fill_null(0).to_numpy(zero_copy_only=False)
        total = prompts.column("n_samples").fill_null(0).to_numpy(zero_copy_only=False)
        return hits.astype(np.int64), total.astype(np.int64)
    return None
