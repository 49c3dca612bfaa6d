"""Reading corpus records: local files and v1 split directories (the Hub: ``hub.py``).

Every reader returns plain Python records (dicts, for the formats corpora use) in the
order of the source, because v1's selection is a function of that order. File-level
problems (missing file, unknown format, a JSON file that does not parse) raise a
``CorpusError`` naming the file; a single unreadable line of a JSON-lines file does not:
it becomes an :class:`Unreadable` record, which the corpus turns into a rejection, so a
run never dies on the 900th line of a file.

pyarrow.parquet is imported inside the function that needs it.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from castillo_core import CorpusError

log = logging.getLogger(__name__)

FORMATS = ("json", "jsonl", "parquet")
SOURCE_HELP = (
    "pass --source with a local file in the corpus's native format (json, jsonl or parquet, "
    "optionally .gz) or a directory of v1 split files raw_<Name>_<split>.json"
)


@dataclass(frozen=True)
class Unreadable:
    """A line of a JSON-lines file that is not valid JSON (kept as a record to reject)."""

    reason: str


def file_format(path: Path) -> tuple[str, bool]:
    """The format of ``path`` from its suffixes, and whether it is gzip-compressed."""
    suffixes = [s.lower().lstrip(".") for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == "gz"
    if compressed:
        suffixes = suffixes[:-1]
    fmt = suffixes[-1] if suffixes else ""
    if fmt == "ndjson":
        fmt = "jsonl"
    return fmt, compressed


def _open_text(path: Path, compressed: bool) -> IO[str]:
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _json_lines(handle: IO[str]) -> list[Any]:
    records: list[Any] = []
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            records.append(Unreadable(f"line {number} is not valid JSON: {exc.msg}"))
    return records


def read_file(path: Path, corpus: str) -> list[Any]:
    """All records of a local file, in file order.

    ``.json`` holds a list of records (or, like Dolly's ``databricks-dolly-15k.json``,
    JSON lines under a .json name, which is detected); ``.jsonl`` one record per line;
    ``.parquet`` a table whose rows become dicts. Each may be gzip-compressed (``.gz``).
    """
    if not path.exists():
        raise CorpusError(f"corpus {corpus}: source {path} does not exist; {SOURCE_HELP}")
    if not path.is_file():
        raise CorpusError(f"corpus {corpus}: source {path} is not a regular file; {SOURCE_HELP}")
    fmt, compressed = file_format(path)
    if fmt not in FORMATS:
        raise CorpusError(
            f"corpus {corpus}: source {path} has an unknown format {fmt or '(no suffix)'!r}; "
            f"known: {', '.join(FORMATS)} (each optionally .gz)"
        )
    try:
        if fmt == "parquet":
            return _read_parquet(path, compressed, corpus)
        with _open_text(path, compressed) as handle:
            if fmt == "jsonl":
                return _json_lines(handle)
            text = handle.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise CorpusError(f"corpus {corpus}: cannot read {path}: {exc}") from None
    return _parse_json_document(text, path, corpus)


def _parse_json_document(text: str, path: Path, corpus: str) -> list[Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines stored under a .json name
            return _json_lines(io.StringIO(text))
        raise CorpusError(
            f"corpus {corpus}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(data) == 1 and len(lists) == 1:  # {"data": [...]} and the like
            return lists[0]
    if not isinstance(data, list):
        raise CorpusError(
            f"corpus {corpus}: {path} holds a JSON {type(data).__name__}, not a list of records; "
            "use a JSON list or JSON lines (.jsonl)"
        )
    return data


def _read_parquet(path: Path, compressed: bool, corpus: str) -> list[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if compressed:
            with gzip.open(path, "rb") as handle:
                table = pq.read_table(pa.BufferReader(handle.read()))
        else:
            table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise CorpusError(f"corpus {corpus}: cannot read parquet file {path}: {exc}") from None
    return table.to_pylist()


def v1_split_file(directory: Path, dataset: str, split: str, corpus: str) -> Path:
    """The v1 split file ``raw_<Name>_<split>.json`` in ``directory`` or ``directory/<Name>/``.

    The second form is v1's own layout (one folder per corpus), so one ``--source``
    can serve a whole grid of corpora.
    """
    for folder in (directory, directory / dataset):
        for suffix in (".json", ".json.gz", ".jsonl", ".jsonl.gz"):
            candidate = folder / f"raw_{dataset}_{split}{suffix}"
            if candidate.is_file():
                return candidate
    present = sorted(p.name for p in directory.glob("raw_*"))
    raise CorpusError(
        f"corpus {corpus}: {directory} has no v1 split file raw_{dataset}_{split}.json (nor {dataset}/ inside it)"
        + (f" (it has: {', '.join(present)})" if present else " (it has no raw_*.json files)")
        + f"; pick a split that is there with --split, or {SOURCE_HELP}"
    )
