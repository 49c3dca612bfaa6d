"""Reading CASTILLO v1's published JSON files into castillo's prompts table.

v1 published one JSON list per ``preproc_<Dataset>_<split>_<model>.json`` file, one
object per ⟨prompt, model⟩ with v1's 17 columns. castillo's prompts table starts with
exactly those columns, so an import keeps them untouched (v1 rounded ``output_mean``
and ``output_std`` to two decimals; we keep its numbers as published, because the v1
degeneration rule and every comparison with the paper use them) and derives what it
can: the split from the file name, ``n_samples``, ``output_min``/``output_max`` and,
since v1's cap is known (``max_new_tokens=15000``), ``n_length_capped``. What v1 never
recorded (seeds, finish reasons, prompt truncation, the model revision) stays null
rather than being guessed. v1 did not publish per-response rows, so the responses
table of an import is empty.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from castillo_views.names import name_problem, shown

from castillo_core import V1_COLUMNS, V1_MAX_NEW_TOKENS, CastilloError, prompts_schema

V1_BACKEND = "transformers"
_FILE_NAME = re.compile(r"^preproc_(?P<dataset>[^_]+)_(?P<split>[^_]+)_(?P<model>.+)\.json$")
_PERCENTILE_KEYS = ("p25", "p50", "p75", "p99")


class V1ImportError(CastilloError):
    """A v1 file that cannot be imported (not JSON, not a list, a record missing a column)."""


@dataclass(frozen=True)
class V1File:
    """One v1 results file and the rows read from it, grouped by (model, dataset)."""

    path: Path
    split: str | None
    records: list[dict[str, Any]]
    origin: str | None = None
    """Where the file came from when not a local path the user gave (``hf://datasets/...``)."""

    @property
    def source(self) -> str:
        return self.origin or str(self.path)


def split_from_name(path: Path) -> str | None:
    """The split named in a ``preproc_<Dataset>_<split>_<model>.json`` file name, if any."""
    match = _FILE_NAME.match(path.name)
    return match.group("split") if match else None


def find_files(path: str | Path) -> list[Path]:
    """The v1 files at ``path``: the file itself, or a directory's ``preproc_*.json`` files."""
    root = Path(path)
    if not root.exists():
        raise V1ImportError(f"{root} does not exist; pass a v1 results file or a directory of preproc_*.json files")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.glob("*.json") if _FILE_NAME.match(p.name))
    if not files:
        raise V1ImportError(
            f"{root} holds no preproc_<Dataset>_<split>_<model>.json files (v1's published layout); "
            f"pass the directory that contains them"
        )
    return files


def _json_lines(text: str, file: Path) -> list[Any]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise V1ImportError(f"{file} line {number} is not valid JSON ({exc.msg})") from None
    return records


def read_file(path: str | Path, split: str | None = None, origin: str | None = None) -> V1File:
    """Read and validate one v1 file (a JSON list, or JSON lines); every problem names the file and the record.

    ``split``: the split of its rows when the file name does not say (a file of the Hub's layout).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise V1ImportError(f"{file} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise V1ImportError(f"{file} is not valid JSON ({exc}); v1 files hold one JSON list of records") from None
        data = _json_lines(text, file)
    if not isinstance(data, list):
        raise V1ImportError(f"{file} holds a JSON {type(data).__name__}, not a list; v1 files hold one list of records")
    split = split if split is not None else split_from_name(file)
    problem = name_problem(split) if split is not None else None
    if problem:
        raise V1ImportError(f"{file}: the split {shown(split)} in the file name cannot be stored ({problem})")
    for index, record in enumerate(data):
        _check_record(file, index, record)
    return V1File(file, split, data, origin)


def _check_record(file: Path, index: int, record: Any) -> None:
    """Refuse a record castillo cannot store as it is: one line naming the file, the record and the value.

    Impossible numbers (NaN, infinities, negative or fractional lengths, an empty
    ``output_sizes``) are refused rather than skipped: a published dataset with such a row is
    damaged, and importing the rest would describe a different dataset under the same name.
    """
    where = f"{file} record {index}"
    if not isinstance(record, dict):
        raise V1ImportError(f"{where} is a JSON {type(record).__name__}, not an object with v1's columns")
    missing = [c for c in V1_COLUMNS if c not in record]
    if missing:
        raise V1ImportError(f"{where} lacks column(s) {', '.join(missing)} (v1 records have: {', '.join(V1_COLUMNS)})")
    sizes = record["output_sizes"]
    if not isinstance(sizes, list) or not sizes:
        raise V1ImportError(f"{where}: output_sizes must be a non-empty list of integers, got {sizes!r:.80}")
    for position, size in enumerate(sizes):
        if not _is_int(size) or not 0 <= size < 2**63:
            raise V1ImportError(
                f"{where}: output_sizes must be a non-empty list of integers >= 0 (token counts), "
                f"but output_sizes[{position}] is {size!r:.40}"
            )
    percentiles = record["output_percentiles"]
    if not isinstance(percentiles, Mapping) or any(k not in percentiles for k in _PERCENTILE_KEYS):
        raise V1ImportError(f"{where}: output_percentiles must be an object with keys {', '.join(_PERCENTILE_KEYS)}")
    for name in ("sample_id", "prompt_id", "model", "dataset"):
        if not isinstance(record[name], str) or not record[name]:
            raise V1ImportError(f"{where}: {name} must be a non-empty string, got {record[name]!r:.80}")
    for name in ("model", "dataset"):
        problem = name_problem(record[name])
        if problem:
            raise V1ImportError(f"{where}: {name} {shown(record[name])} cannot name a directory ({problem})")
    lengths = [("output_mean", record["output_mean"]), ("output_std", record["output_std"])]
    lengths += [(f"output_percentiles.{k}", percentiles[k]) for k in _PERCENTILE_KEYS]
    for name, value in lengths:
        if not _is_number(value) or not _finite(value) or value < 0:
            raise V1ImportError(f"{where}: {name} must be a finite number >= 0, got {value!r:.40}")
    if _is_number(record["input_size"]) and record["input_size"] < 0:
        raise V1ImportError(f"{where}: input_size must be a token count >= 0, got {record['input_size']!r}")
    for name in ("top_p", "temp", "gen_time"):
        value = record[name]
        if _is_number(value) and (not _finite(value) or value < 0):
            raise V1ImportError(f"{where}: {name} must be a finite number >= 0, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    return isinstance(value, int) or math.isfinite(value)  # an int is finite, however large


def import_config(
    model: str, dataset: str, split: str | None, sampling: tuple[Any, Any, Any], cap: int
) -> dict[str, Any]:
    """What an imported cell's ``config_hash`` covers: source, model, corpus split, sampling, cap."""
    top_k, top_p, temp = sampling
    return {
        "source": "castillo-v1",
        "backend": V1_BACKEND,
        "model": model,
        "dataset": dataset,
        "split": split,
        "sampling": {"top_k": top_k, "top_p": top_p, "temp": temp},
        "max_new_tokens": cap,
    }


CellKey = tuple[str, str, tuple[Any, Any, Any]]


def group_records(file: V1File) -> Iterator[tuple[CellKey, list[int]]]:
    """A file's record indices grouped by (model, dataset, sampling): one castillo cell each."""
    groups: dict[CellKey, list[int]] = {}
    for index, record in enumerate(file.records):
        key = (record["model"], record["dataset"], (record["top_k"], record["top_p"], record["temp"]))
        groups.setdefault(key, []).append(index)
    yield from groups.items()


def prompts_table(
    records: Sequence[dict[str, Any]],
    split: str | None,
    cap: int,
    config_hash: str,
    castillo_version: str,
    file: Path | None = None,
    indices: Sequence[int] | None = None,
) -> pa.Table:
    """v1 records as castillo prompts rows: v1's columns untouched, castillo's derived."""
    schema = prompts_schema()
    count = len(records)
    columns: dict[str, list[Any]] = {name: [r[name] for r in records] for name in V1_COLUMNS}
    columns["output_percentiles"] = [{k: r["output_percentiles"][k] for k in _PERCENTILE_KEYS} for r in records]
    sizes = columns["output_sizes"]
    capped_at = cap - 1  # v1's rule: a length of 14,999 or more (cap 15,000) hit the cap
    columns.update(
        {
            "split": [split] * count,
            "backend": [V1_BACKEND] * count,
            "model_revision": [None] * count,
            "n_samples": [len(s) for s in sizes],
            "max_new_tokens": [cap] * count,
            "max_prompt_tokens": [None] * count,
            "prompt_truncated": [None] * count,
            "source_prompt_id": [None] * count,
            "seed": [None] * count,
            "finish_reasons": [None] * count,
            "n_length_capped": [sum(1 for x in s if x >= capped_at) for s in sizes],
            "output_min": [min(s) for s in sizes],
            "output_max": [max(s) for s in sizes],
            "config_hash": [config_hash] * count,
            "castillo_version": [castillo_version] * count,
        }
    )
    arrays = []
    for field in schema:
        try:
            arrays.append(pa.array(columns[field.name], type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise V1ImportError(_bad_column(records, field, file, indices, exc)) from None
    return pa.Table.from_arrays(arrays, schema=schema)


def _bad_column(
    records: Sequence[dict[str, Any]],
    field: pa.Field,
    file: Path | None,
    indices: Sequence[int] | None,
    exc: Exception,
) -> str:
    """Find the first record whose value of ``field`` does not convert, for the error message."""
    where = str(file) if file else "v1 records"
    for position, record in enumerate(records):
        index = indices[position] if indices is not None else position
        value = record.get(field.name)
        try:
            pa.array([value], type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            return f"{where} record {index}: column {field.name} has value {value!r:.80}, expected {field.type}"
    return f"{where}: column {field.name} cannot be converted to {field.type}: {exc}"


@dataclass
class ImportSummary:
    """What an import wrote: per file, rows written and rows already present."""

    out: str
    files: int = 0
    written: int = 0
    skipped: int = 0
    cells: dict[str, dict[str, Any]] | None = None


def import_v1(path: str | Path, out: str | Path, cap: int = V1_MAX_NEW_TOKENS) -> ImportSummary:
    """Import v1 results files (a file, or a directory of them) into the castillo output ``out``."""
    if cap < 2:
        raise V1ImportError(f"--cap {cap}: the cap must be at least 2 tokens")
    return import_files([read_file(p) for p in find_files(path)], str(path), out, cap)


def import_files(files: list[V1File], origin: str, out: str | Path, cap: int = V1_MAX_NEW_TOKENS) -> ImportSummary:
    """Import read v1 files into the castillo output ``out`` (resumable, idempotent).

    Every file is validated before anything is written, so a bad file in a directory
    fails the import cleanly instead of leaving half of it behind. Rows go through
    :meth:`Store.write_part`, so the layout is exactly that of ``castillo run``; rows
    whose prompt id the output already holds under the same import config are
    skipped, so importing twice does not duplicate anything.
    """
    from castillo_core import Store, __version__, config_hash, responses_schema

    if cap < 2:
        raise V1ImportError(f"--cap {cap}: the cap must be at least 2 tokens")
    store = Store(out)
    with store.lock():  # one writer per output, as `castillo run`
        store.open()
        manifest = store.read_manifest()
        summary = ImportSummary(out=str(store.root), cells={})
        empty_responses = responses_schema().empty_table()
        for file in files:
            summary.files += 1
            for (model, dataset, sampling), indices in group_records(file):
                config = import_config(model, dataset, file.split, sampling, cap)
                cell_hash = config_hash(config)
                done = store.finished(model, dataset).get(cell_hash, set())
                todo = [i for i in indices if file.records[i]["prompt_id"] not in done]
                seen: set[str] = set(done)
                unique = []
                for i in todo:  # a prompt listed twice in one file is imported once
                    pid = file.records[i]["prompt_id"]
                    if pid not in seen:
                        seen.add(pid)
                        unique.append(i)
                summary.skipped += len(indices) - len(unique)
                if unique:
                    records = [file.records[i] for i in unique]
                    table = prompts_table(records, file.split, cap, cell_hash, __version__, file.path, unique)
                    metadata = {
                        "config_hash": cell_hash,
                        "provenance": {
                            "source": "castillo-v1",
                            "file": file.path.name,
                            "castillo_version": __version__,
                            **config,
                        },
                    }
                    store.write_part(model, dataset, cell_hash, table, empty_responses, metadata)
                    summary.written += len(unique)
                entry = manifest.cell(cell_hash, model, dataset)
                entry.model_id = model.replace("--", "/", 1)
                entry.backend, entry.config, entry.status, entry.source = V1_BACKEND, config, "done", file.source
                entry.prompts_total = entry.prompts_done = len(seen)
                summary.cells[cell_hash] = entry.model_dump(mode="json")
        manifest.imports.append(
            {
                "source": "castillo-v1",
                "path": origin,
                "files": summary.files,
                "written": summary.written,
                "skipped": summary.skipped,
                "cap": cap,
            }
        )
        store.write_manifest(manifest)
    return summary
