"""The on-disk dataset: hive-partitioned Parquet parts and a manifest.

Layout of an output directory::

    OUT/manifest.json
    OUT/prompts/model=<model>/dataset=<dataset>/part-<cell>-<attempt>-<seq>.parquet
    OUT/responses/model=<model>/dataset=<dataset>/part-<cell>-<attempt>-<seq>.parquet

Every part is written to a hidden temporary file and renamed into place, so a reader
never sees half a file. A part's responses are renamed in before its prompts: a
prompt counts as finished only once its prompts row exists, and a responses part whose
prompts partner never arrived (a crash between the two renames) is moved to
``OUT/_quarantine/`` and reported on the next open, never read as data. Temporary
files start with "." and quarantined ones live under "_", which pyarrow's dataset
discovery skips, so even a foreign reader never counts them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from castillo_core.api.errors import StoreError
from castillo_core.engine.manifest import Manifest, read_manifest, write_manifest
from castillo_core.engine.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

TABLES = ("prompts", "responses")
QUARANTINE = "_quarantine"
METADATA_KEY = b"castillo"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def partition_dir(root: Path, table: str, model: str, dataset: str) -> Path:
    return root / table / f"model={model}" / f"dataset={dataset}"


@dataclass
class ScanReport:
    """What opening an output directory found besides good parts."""

    removed_temporary: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        out = []
        if self.removed_temporary:
            out.append(f"removed {len(self.removed_temporary)} temporary file(s) left by an interrupted write")
        if self.quarantined:
            out.append(
                f"moved {len(self.quarantined)} part(s) without their prompts partner to {QUARANTINE}/ "
                f"(their prompts will be generated again): {', '.join(self.quarantined[:3])}"
            )
        if self.unreadable:
            out.append(f"ignored {len(self.unreadable)} unreadable part(s): {', '.join(self.unreadable[:3])}")
        return out


class Store:
    """One output directory: parts, resume index and manifest."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.attempt = uuid.uuid4().hex[:8]
        self._seq = 0
        self._finished: dict[tuple[str, str], dict[str, set[str]]] = {}

    # -- opening and scanning --------------------------------------------------------

    def open(self) -> ScanReport:
        """Create the directory if needed and clean what a crash may have left.

        Also forgets the remembered resume index: other processes (Ray workers) may have
        written parts since it was read.
        """
        self._finished.clear()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create output directory {self.root}: {exc}") from None
        if self.root.is_file():
            raise StoreError(f"output {self.root} is a file, not a directory")
        return self._scan()

    def _scan(self) -> ScanReport:
        report = ScanReport()
        for table in TABLES:
            base = self.root / table
            if not base.exists():
                continue
            for tmp in base.rglob(".tmp-*"):
                tmp.unlink(missing_ok=True)
                report.removed_temporary.append(str(tmp.relative_to(self.root)))
        responses = self.root / "responses"
        if responses.exists():
            for part in responses.rglob("part-*.parquet"):
                partner = self.root / "prompts" / part.relative_to(responses)
                if not partner.exists():
                    target = self.root / QUARANTINE / part.relative_to(self.root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(part), str(target))
                    report.quarantined.append(str(part.relative_to(self.root)))
        for message in report.messages():
            log.warning("%s: %s", self.root, message)
        return report

    def prompt_parts(self, model: str | None = None, dataset: str | None = None) -> list[Path]:
        """Finished prompts parts, optionally of one partition."""
        base = self.root / "prompts"
        if model is not None and dataset is not None:
            base = partition_dir(self.root, "prompts", model, dataset)
        if not base.exists():
            return []
        return sorted(base.rglob("part-*.parquet"))

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
        done: dict[str, set[str]] = {}
        parts = self.prompt_parts(model, dataset)
        if not parts:
            return done
        try:
            # one multi-threaded scan of two columns over every part of the partition
            table = ds.dataset([str(p) for p in parts], format="parquet").to_table(columns=["prompt_id", "config_hash"])
        except (OSError, pa.ArrowInvalid):
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
        self._write_pair(name, model, dataset, prompts, responses, metadata)
        return name

    def rewrite_part(
        self, prompts_part: Path, prompts: pa.Table, responses: pa.Table, metadata: Mapping[str, Any]
    ) -> None:
        """Replace an existing part (both tables) in place, each file atomically; responses first.

        A crash between the two renames leaves new responses beside the old prompts part,
        whose metadata still says the old columns: whoever rewrote it (a rescore) does it again.
        """
        partition = prompts_part.parent
        model = partition.parent.name.removeprefix("model=")
        dataset = partition.name.removeprefix("dataset=")
        self._write_pair(prompts_part.name, model, dataset, prompts, responses, metadata)

    def _write_pair(
        self, name: str, model: str, dataset: str, prompts: pa.Table, responses: pa.Table, metadata: Mapping[str, Any]
    ) -> None:
        blob = json.dumps({"schema_version": SCHEMA_VERSION, **metadata}, sort_keys=True, default=str).encode()
        for table_name, table in (("responses", responses), ("prompts", prompts)):
            directory = partition_dir(self.root, table_name, model, dataset)
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".tmp-{name}"
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: blob})
            pq.write_table(table, tmp, compression="zstd", compression_level=1)
            os.replace(tmp, directory / name)

    def responses_part(self, prompts_part: Path) -> Path:
        """The responses partner of a prompts part."""
        return self.root / "responses" / prompts_part.relative_to(self.root / "prompts")

    # -- manifest ------------------------------------------------------------------

    def read_manifest(self) -> Manifest:
        """The output's manifest (see :mod:`castillo_core.engine.manifest`)."""
        return read_manifest(self.root)

    def write_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.root, manifest)


def _group_ids(table: pa.Table) -> Iterator[tuple[str, list[str]]]:
    ids = table.column("prompt_id").to_pylist()
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
