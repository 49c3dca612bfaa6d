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

Each view is written as v1's own scripts wrote it:

- ``gen_time`` with 5 decimals (v1 rounded the measured seconds so);
- a sample cut by the cap (finish reason ``length``) as ``max_new_tokens + 1``, v1's count of
  it (v1 counted the non-pad ids plus one; castillo stores the exact count), with the row's
  statistics computed over those values as v1's were;
- in the ``sanitized`` view, the statistics of the rows whose lengths were removed exactly
  as v1's ``sanitize_dataset`` wrote them: unrounded (``float(np.mean(...))``, ...), where
  every other row keeps v1's rounding;
- NaN as Python's ``json`` writes it with its defaults (a bare ``NaN``), which is how v1's
  ``json.dump`` wrote one; a null stays ``null``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from castillo_views.names import file_part

from castillo_formats.dest import ExportDest, ExportError

MEAN_DECIMALS = 2
PERCENTILE_DECIMALS = 3
GEN_TIME_DECIMALS = 5
DEFAULT_SPLIT = "full"
_PERCENTILES = (25, 50, 75, 99)


@dataclass
class V1ExportSummary:
    """Files written and rows per file."""

    dest: Path
    files: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.files.values())


NAME_PART_BYTES = 72
"""Longest dataset, split or model part of a file name: 3 x 72 + 15 stays under 255 bytes with room for the
temporary name (``.tmp-<8 hex>-``) the file is written through."""


def _name_part(value: str) -> str:
    """v1's file names split on "_": a dataset or split containing one is written with "-"."""
    return file_part(value.replace("_", "-").replace("/", "--"), NAME_PART_BYTES, "-")


def file_name(dataset: str, split: str, model: str) -> str:
    """``preproc_<Dataset>_<split>_<model>.json``, as v1 named its files.

    The names come from the data, so each part goes through :func:`castillo_views.names.file_part`:
    v1's own names are written as v1 wrote them; a name with characters that do not belong in a
    file name (a path separator, ``$``, a control character) or a very long one is written as
    a plain slug plus a hash of the real name (the records inside keep the real name).
    """
    return (
        f"preproc_{_name_part(dataset)}_{_name_part(split)}_"
        f"{file_part(model.replace('/', '--'), NAME_PART_BYTES, '-')}.json"
    )


def _round(value: Any, decimals: int) -> Any:
    return round(float(value), decimals) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def v1_sizes(row: dict[str, Any]) -> list[Any] | None:
    """``output_sizes`` as v1 counted them: a sample the cap cut is ``max_new_tokens + 1``.

    Rows without finish reasons (imported from v1, which wrote its own counts) are unchanged.
    """
    sizes, reasons, cap = row.get("output_sizes"), row.get("finish_reasons"), row.get("max_new_tokens")
    if sizes is None or reasons is None or cap is None or len(reasons) != len(sizes):
        return sizes
    pairs = zip(sizes, reasons, strict=True)
    return [cap + 1 if reason == "length" and size == cap else size for size, reason in pairs]


def v1_record(row: dict[str, Any], recomputed: bool = False) -> dict[str, Any]:
    """One prompts row as v1 wrote it: its 17 columns in order, v1's counts and rounding.

    ``recomputed`` marks a sanitized row whose statistics v1's ``sanitize_dataset`` wrote
    again, unrounded.
    """
    from castillo_core import V1_COLUMNS

    record = {name: row.get(name) for name in V1_COLUMNS}
    sizes = v1_sizes(row)
    if sizes != record["output_sizes"]:  # capped samples at v1's count: v1's statistics are over those
        import numpy as np

        record["output_sizes"] = sizes
        record["output_mean"] = np.mean(sizes).item()
        record["output_std"] = np.std(sizes).item()
        values = np.percentile(sizes, _PERCENTILES)
        record["output_percentiles"] = {f"p{q}": v.item() for q, v in zip(_PERCENTILES, values, strict=True)}
    if not recomputed:
        record["output_mean"] = _round(record["output_mean"], MEAN_DECIMALS)
        record["output_std"] = _round(record["output_std"], MEAN_DECIMALS)
        percentiles = record["output_percentiles"] or {}
        record["output_percentiles"] = {k: _round(v, PERCENTILE_DECIMALS) for k, v in percentiles.items()}
    else:
        record["output_mean"] = _float(record["output_mean"])
        record["output_std"] = _float(record["output_std"])
        percentiles = record["output_percentiles"] or {}
        record["output_percentiles"] = {k: _float(v) for k, v in percentiles.items()}
    record["gen_time"] = _round(record["gen_time"], GEN_TIME_DECIMALS)
    return record


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


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
    extra = ["split", "finish_reasons", "max_new_tokens"]
    columns = None if view != "original" else [*V1_COLUMNS, *extra]
    prompts = read_table(source, "prompts", columns=columns)
    if prompts.num_rows == 0:
        raise ExportError(f"{source} holds no prompts rows; nothing to export")
    recomputed = np.zeros(prompts.num_rows, dtype=bool)
    if view != "original":
        views, flags = compute_views(prompts, flag_responses(source, detector), detector, cap)
        if view == "sanitized":  # rows v1's sanitize_dataset rewrote, in the view's (filtered) order
            recomputed = (np.asarray(flags.degenerate) & ~np.asarray(flags.dropped))[~np.asarray(flags.dropped)]
        prompts = views[view].prompts
    missing = [c for c in V1_COLUMNS if c not in prompts.column_names]
    if missing:
        raise ExportError(f"{source} lacks v1 column(s) {', '.join(missing)}; it is not a castillo prompts table")
    table = prompts.select([*V1_COLUMNS, *(c for c in extra if c in prompts.column_names)])
    if view != "sanitized":
        recomputed = np.zeros(table.num_rows, dtype=bool)
    groups = _groups(table)
    names: dict[tuple[str, str, str], str] = {}
    for dataset, split, model in sorted(groups, key=repr):
        if not dataset or not model or split_from_name(Path(file_name(dataset, split, model))) != _name_part(split):
            raise ExportError(
                f"cannot name a v1 file for dataset {dataset!r:.80}, split {split!r:.80}, model {model!r:.80}"
            )
        name = file_name(dataset, split, model)
        if name in set(names.values()):  # two names that read the same in a file name ("a_b", "a-b"): keep both
            digest = hashlib.sha256(repr((dataset, split, model)).encode()).hexdigest()[:8]
            name = name.removesuffix(".json") + f"~{digest}.json"
        names[(dataset, split, model)] = name
    files = ExportDest(target, "castillo-v1", force)
    files.prepare(names.values())
    summary = V1ExportSummary(dest=target)
    for key, name in names.items():
        rows = table.take(pa.array(groups[key], type=pa.int64())).to_pylist()
        records = [v1_record(r, bool(recomputed[i])) for r, i in zip(rows, groups[key], strict=True)]
        data = json.dumps(records).encode()  # json's defaults, as v1's json.dump: NaN is written NaN
        atomic_write_bytes(target / name, data)
        summary.files[name] = len(rows)
    files.finish()
    return summary
