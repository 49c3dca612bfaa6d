"""``castillo export OUT --format castillo-v1 DEST``: castillo's rows in CASTILLO v1's JSON layout.

v1 published one JSON list per ``preproc_<Dataset>_<split>_<model>.json`` file, each object
holding v1's 17 columns in v1's order, with ``output_mean`` and ``output_std`` rounded to
2 decimals and the percentiles to 3. Writing exactly that lets v1's own scripts and
notebooks read castillo's results, and lets ``castillo import castillo-v1`` read them back.

castillo keeps full precision on disk; the rounding happens here only, because v1's format
asks for it. Rows keep their stored order within a file, so exporting an imported v1
dataset gives back v1's files record for record. What v1's format has no column for
(seeds, finish reasons, the cap, castillo's metric columns) is not written; an import of
the export derives ``n_length_capped`` again from the cap it is given (``--cap``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from castillo_formats.hf_export import ExportError, prepare_dest

MEAN_DECIMALS = 2
PERCENTILE_DECIMALS = 3
DEFAULT_SPLIT = "full"


@dataclass
class V1ExportSummary:
    """Files written and rows per file."""

    dest: Path
    files: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.files.values())


def _name_part(value: str) -> str:
    """v1's file names split on "_": a dataset or split containing one is written with "-"."""
    return value.replace("_", "-").replace("/", "--")


def file_name(dataset: str, split: str, model: str) -> str:
    """``preproc_<Dataset>_<split>_<model>.json``, as v1 named its files."""
    return f"preproc_{_name_part(dataset)}_{_name_part(split)}_{model.replace('/', '--')}.json"


def _round(value: Any, decimals: int) -> Any:
    return round(float(value), decimals) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def v1_record(row: dict[str, Any]) -> dict[str, Any]:
    """One prompts row as v1 wrote it: its 17 columns in order, v1's rounding."""
    from castillo_core import V1_COLUMNS

    record = {name: row.get(name) for name in V1_COLUMNS}
    record["output_mean"] = _round(record["output_mean"], MEAN_DECIMALS)
    record["output_std"] = _round(record["output_std"], MEAN_DECIMALS)
    percentiles = record["output_percentiles"] or {}
    record["output_percentiles"] = {k: _round(v, PERCENTILE_DECIMALS) for k, v in percentiles.items()}
    return record


def _groups(table: pa.Table) -> dict[tuple[str, str, str], list[int]]:
    """Row indices per (dataset, split, model), in stored order."""
    datasets = table.column("dataset").to_pylist()
    models = table.column("model").to_pylist()
    splits = table.column("split").to_pylist() if "split" in table.column_names else [None] * table.num_rows
    groups: dict[tuple[str, str, str], list[int]] = {}
    for index, key in enumerate(zip(datasets, splits, models, strict=True)):
        dataset, split, model = key
        groups.setdefault((dataset, split or DEFAULT_SPLIT, model), []).append(index)
    return groups


def export_v1(
    out: str | Path,
    dest: str | Path,
    view: str = "original",
    detector: str = "v1-length",
    cap: int | None = None,
    force: bool = False,
) -> V1ExportSummary:
    """Write ``out``'s prompts rows (or one of its views) as v1's JSON files into ``dest``."""
    from castillo_views.views import VIEWS, compute_views, flag_responses

    from castillo_core import V1_COLUMNS, atomic_write_bytes, read_table
    from castillo_formats.v1_import import split_from_name

    if view not in VIEWS:
        raise ExportError(f"--view {view!r}: choose one of {', '.join(VIEWS)}")
    source, target = Path(out), Path(dest)
    columns = None if view != "original" else [*V1_COLUMNS, "split"]
    prompts = read_table(source, "prompts", columns=columns)
    if prompts.num_rows == 0:
        raise ExportError(f"{source} holds no prompts rows; nothing to export")
    if view != "original":
        views, _ = compute_views(prompts, flag_responses(source, detector), detector, cap)
        prompts = views[view].prompts
    missing = [c for c in V1_COLUMNS if c not in prompts.column_names]
    if missing:
        raise ExportError(f"{source} lacks v1 column(s) {', '.join(missing)}; it is not a castillo prompts table")
    existing = sorted(target.glob("preproc_*.json")) if target.is_dir() else []
    prepare_dest(target, force, existing)
    summary = V1ExportSummary(dest=target)
    table = prompts.select([*V1_COLUMNS, *(["split"] if "split" in prompts.column_names else [])])
    for (dataset, split, model), indices in sorted(_groups(table).items()):
        rows = table.take(pa.array(indices, type=pa.int64())).select(list(V1_COLUMNS)).to_pylist()
        name = file_name(dataset, split, model)
        if split_from_name(Path(name)) != _name_part(split):
            raise ExportError(f"cannot name a v1 file for dataset {dataset!r}, split {split!r}, model {model!r}")
        data = json.dumps([v1_record(r) for r in rows]).encode()
        atomic_write_bytes(target / name, data)
        summary.files[name] = len(rows)
    return summary
