"""The on-disk dataset: hive-partitioned Parquet parts and a manifest.

Layout of an output directory::

    OUT/manifest.json
    OUT/parts.jsonl
    OUT/prompts/<model>/<dataset>/part-<cell>-<attempt>-<seq>.parquet
    OUT/responses/<model>/<dataset>/part-<cell>-<attempt>-<seq>.parquet

Every part is written to a hidden temporary file (fsynced) and renamed into place, so a
reader never sees half a file. A part's responses are renamed in first, then its line is
appended to the ledger (``OUT/parts.jsonl``: rows, bytes and sha256 of both files, the
commit point, see :mod:`castillo_core.engine.ledger`), then its prompts are renamed in: a
prompt counts as finished only once its prompts row exists. On the next open a part whose
ledger line was written but whose prompts rename was not is completed from its temporary
file; a responses part with neither is moved to ``OUT/_quarantine/`` and reported, never
read as data. Temporary files start with "." and quarantined ones live under "_", which
pyarrow's dataset discovery skips. A prompts file no ledger line accounts for (a copy, a
foreign file) or one whose size changed makes writers and readers stop with one line
naming it; ``castillo verify`` checks checksums too and ``--repair`` quarantines.

Partition directories are ``<model>/<dataset>``, percent-encoded so a name from the data
can never leave the output directory (nor start with ``.``/``_``, which readers skip). They
are deliberately not hive ``key=value`` directories: ``model`` and ``dataset`` are columns of
every file (CASTILLO v1's first columns), and a hive key that repeats a file column breaks
readers one way or the other (pandas infers the key as a dictionary and refuses the string
column; pyarrow's own hive discovery refuses a dictionary column). Plain directories read
the same in pandas, polars, DuckDB, pyarrow.dataset and ``datasets``. Outputs written with
``model=``/``dataset=`` directories are moved to this layout the next time a writer opens them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from castillo_core.api.errors import StoreError
from castillo_core.engine.ledger import FileRecord, Ledger, PartRecord
from castillo_core.engine.locking import OutputLock, command_line

if TYPE_CHECKING:
    from castillo_core.engine.scan import ScanReport
from castillo_core.engine.manifest import Manifest, read_manifest, write_manifest
from castillo_core.engine.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

TABLES = ("prompts", "responses")
QUARANTINE = "_quarantine"
METADATA_KEY = b"castillo"
LEDGER_NAME = "parts.jsonl"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file).

    A failure (a full disk, a read-only directory) leaves no temporary file behind and is
    one line naming the file.
    """
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    _write_file(tmp, data)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_file(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


_MAX_SEGMENT = 200  # bytes of an encoded directory name (file systems allow 255)


def segment(value: str, what: str) -> str:
    """``value`` as one safe directory name: percent-encoded, never ``.``/``..``, never too long.

    Refuses what no directory should be named after (empty, control characters such as NUL)
    with one line naming the value; :func:`castillo_core.engine.plan.expand` calls it before
    anything runs.
    """
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} {value!r} cannot name a directory: it is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise StoreError(f"{what} {value!r} cannot name a directory: it holds control characters")
    encoded = quote(value, safe="-_.~+@,")
    if encoded[0] in "._":  # never hidden from readers, never "." or ".."
        encoded = f"%{ord(encoded[0]):02X}{encoded[1:]}"
    if len(encoded.encode()) > _MAX_SEGMENT:
        raise StoreError(
            f"{what} {value[:60]!r}... is {len(value)} characters: too long to name a directory "
            f"(at most {_MAX_SEGMENT} bytes encoded); give it a shorter name"
        )
    return encoded


def partition_dir(root: Path, table: str, model: str, dataset: str) -> Path:
    return root / table / segment(model, "model") / segment(dataset, "dataset")


class Store:
    """One output directory: parts, ledger, resume index and manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.attempt = uuid.uuid4().hex[:8]
        self.ledger = Ledger(self.root)
        self._seq = 0
        self._finished: dict[tuple[str, str], dict[str, set[str]]] = {}

    # -- opening and scanning --------------------------------------------------------

    def lock(self, what: str | None = None) -> OutputLock:
        """The output's writer lock (see :mod:`castillo_core.engine.locking`); use it as a context manager."""
        self.root.mkdir(parents=True, exist_ok=True)
        return OutputLock(self.root, what or command_line())

    def open(self) -> ScanReport:
        """Create the directory if needed, finish or clean what a crash left, and check the parts.

        Also forgets the remembered resume index: other processes (a cluster's workers) may
        have written parts since it was read. Call it only under the writer lock: it moves
        files a live writer may still be renaming.
        """
        self._finished.clear()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create output directory {self.root}: {exc.strerror or exc}") from None
        if self.root.is_file():
            raise StoreError(f"output {self.root} is a file, not a directory")
        from castillo_core.engine.scan import check, scan

        report = scan(self)
        check(self)
        return report

    def check(self) -> None:
        """The cheap integrity checks every reader makes (see :func:`castillo_core.engine.scan.check`)."""
        from castillo_core.engine.scan import check

        check(self)

    def problems(self) -> list[tuple[str, str]]:
        """What :meth:`check` refuses, as (file relative to the output, what is wrong)."""
        from castillo_core.engine.scan import find_problems

        return find_problems(self)

    def quarantine(self, path: Path) -> Path:
        target = self.root / QUARANTINE / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
        return target

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def prompt_parts(self, model: str | None = None, dataset: str | None = None) -> list[Path]:
        """Finished prompts parts, optionally of one partition."""
        base = self.root / "prompts"
        if model is not None and dataset is not None:
            base = partition_dir(self.root, "prompts", model, dataset)
        if not base.exists():
            return []
        return sorted(p for p in base.rglob("part-*.parquet") if not _under_hidden(p, self.root))

    def finished(self, model: str, dataset: str) -> dict[str, set[str]]:
        """Prompt ids already stored in a partition, grouped by config hash.

        Remembered until this store writes into the partition or is opened again: a run
        asks twice (the config check, then the plan), and over a million responses each
        read costs a third of a second.
        """
        key = (model, dataset)
        if key not in self._finished:
            self._finished[key] = self._read_finished(model, dataset)
        return {h: set(ids) for h, ids in self._finished[key].items()}

    def _read_finished(self, model: str, dataset: str) -> dict[str, set[str]]:
        """Done prompt ids per config hash: each row's ``prompt_id`` and, where ``--truncation v1``
        cut the prompt, its ``source_prompt_id`` (the id the corpus gives the uncut prompt)."""
        done: dict[str, set[str]] = {}
        parts = self.prompt_parts(model, dataset)
        if not parts:
            return done
        try:
            # one multi-threaded scan of three columns over every part of the partition (parts
            # written before source_prompt_id existed read it as null)
            table = ds.dataset([str(p) for p in parts], schema=_FINISHED_SCHEMA, format="parquet").to_table()
        except (OSError, pa.ArrowInvalid, pa.ArrowTypeError):
            table = None
        if table is None:  # find the part at fault, to name it
            for part in parts:
                try:
                    pq.read_metadata(part)
                    pq.read_table(part, columns=["prompt_id", "config_hash"])
                except (OSError, pa.ArrowInvalid) as exc:
                    raise StoreError(
                        f"part {part} cannot be read ({exc}); move it out of {self.root} and re-run to regenerate it"
                    ) from None
            raise StoreError(f"the parts of {model} x {dataset} in {self.root} cannot be read together")
        for config_hash, ids in _group_ids(table):
            done.setdefault(config_hash, set()).update(ids)
        if table.column("source_prompt_id").null_count < table.num_rows:
            sources = table.filter(table.column("source_prompt_id").is_valid())
            for config_hash, ids in _group_ids(sources, "source_prompt_id"):
                done.setdefault(config_hash, set()).update(ids)
        return done

    # -- writing -------------------------------------------------------------------

    def write_part(
        self,
        model: str,
        dataset: str,
        config_hash: str,
        prompts: pa.Table,
        responses: pa.Table,
        metadata: Mapping[str, Any],
    ) -> str:
        """Write one part of both tables atomically: responses first, then prompts."""
        self._seq += 1
        self._finished.pop((model, dataset), None)
        name = f"part-{config_hash[:12]}-{self.attempt}-{self._seq:05d}.parquet"
        prompts_dir = partition_dir(self.root, "prompts", model, dataset)
        responses_dir = partition_dir(self.root, "responses", model, dataset)
        self._write_pair(name, prompts_dir, responses_dir, prompts, responses, metadata)
        return name

    def rewrite_part(
        self, prompts_part: Path, prompts: pa.Table, responses: pa.Table, metadata: Mapping[str, Any]
    ) -> None:
        """Replace an existing part (both tables) in place, each file atomically; responses first.

        Its new ledger line supersedes the old one. A crash between the two renames leaves
        new responses beside the old prompts part, whose metadata still says the old
        columns: whoever rewrote it (a rescore) does it again.
        """
        self._write_pair(
            prompts_part.name,
            prompts_part.parent,
            self.responses_part(prompts_part).parent,
            prompts,
            responses,
            metadata,
        )

    def _write_pair(
        self,
        name: str,
        prompts_dir: Path,
        responses_dir: Path,
        prompts: pa.Table,
        responses: pa.Table,
        metadata: Mapping[str, Any],
    ) -> None:
        """Commit one part: both files written and fsynced, responses renamed, ledger line, prompts renamed."""
        blob = json.dumps({"schema_version": SCHEMA_VERSION, **metadata}, sort_keys=True, default=str).encode()
        files = []
        for directory, table in ((responses_dir, responses), (prompts_dir, prompts)):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot write into {directory}: {exc.strerror or exc}") from None
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: blob})
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd", compression_level=1)
            data = sink.getvalue().to_pybytes()
            files.append(
                (
                    directory / f".tmp-{name}",
                    directory / name,
                    FileRecord.of(self.rel(directory / name), table.num_rows, data),
                    data,
                )
            )
        try:
            for tmp, _, _, data in files:
                _write_file(tmp, data)
            (r_tmp, r_final, r_record, _), (p_tmp, p_final, p_record, _) = files
            os.replace(r_tmp, r_final)
            self.ledger.append(PartRecord(p_record, r_record, metadata.get("config_hash")))
            os.replace(p_tmp, p_final)
        except OSError as exc:
            for tmp, _, _, _ in files:
                tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write a part into {self.root}: {exc.strerror or exc}") from None
        except BaseException:
            for tmp, _, _, _ in files:
                tmp.unlink(missing_ok=True)
            raise

    def responses_part(self, prompts_part: Path) -> Path:
        """The responses partner of a prompts part."""
        return self.root / "responses" / prompts_part.relative_to(self.root / "prompts")

    # -- manifest ------------------------------------------------------------------

    def read_manifest(self) -> Manifest:
        """The output's manifest (see :mod:`castillo_core.engine.manifest`)."""
        return read_manifest(self.root)

    def write_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.root, manifest)


_FINISHED_SCHEMA = pa.schema(
    [("prompt_id", pa.string()), ("config_hash", pa.string()), ("source_prompt_id", pa.string())]
)


def _group_ids(table: pa.Table, column: str = "prompt_id") -> Iterator[tuple[str, list[str]]]:
    ids = table.column(column).to_pylist()
    hashes = table.column("config_hash").to_pylist()
    if hashes and all(h == hashes[0] for h in hashes):
        yield hashes[0], ids
        return
    grouped: dict[str, list[str]] = {}
    for pid, config_hash in zip(ids, hashes, strict=True):
        grouped.setdefault(config_hash, []).append(pid)
    yield from grouped.items()


def part_metadata(path: Path) -> dict[str, Any]:
    """The ``castillo`` key-value metadata of one part (config hash, provenance, metrics)."""
    meta = pq.read_schema(path).metadata or {}
    try:
        blob = json.loads(meta.get(METADATA_KEY, b"{}"))
    except json.JSONDecodeError:
        return {}
    return blob if isinstance(blob, dict) else {}


def _under_hidden(path: Path, root: Path) -> bool:
    return any(p.startswith((".", "_")) for p in path.relative_to(root).parts)
