"""The manifest of an output directory: one typed record, one reader, one writer.

``OUT/manifest.json`` says what the output holds and how it was made: one entry per cell
(keyed by config hash) with its config, provenance and progress, one record per run, and
what importers and views add. Everything that writes it goes through :class:`Manifest`
and :func:`write_manifest`; everything that reads it through :func:`read_manifest`, so
the file has one shape. Unknown keys are kept (``extra="allow"``): a manifest written by a
newer castillo survives a round trip through an older one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from castillo_core.api.errors import StoreError

MANIFEST = "manifest.json"

CellStatus = Literal["pending", "running", "done", "skipped", "interrupted", "failed"]
RunStatus = Literal["running", "done", "incomplete", "interrupted", "failed"]


def now() -> str:
    """The current UTC time as the manifest stores it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class CellEntry(_Entry):
    """One cell of the output: what it is, how far it got, and the provenance of its numbers."""

    model: str
    dataset: str
    model_id: str | None = None
    backend: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    status: CellStatus = "pending"
    prompts_total: int | None = None
    prompts_done: int | None = None
    rejected: int = 0
    duplicates_merged: int = 0
    provenance: dict[str, Any] | None = None
    backend_report: dict[str, Any] = Field(default_factory=dict)
    rejected_records: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    source: str | None = None
    metrics: dict[str, Any] | None = None  # name -> {distribution, version, options} of the stored rows


class RunRecord(_Entry):
    """One ``castillo run`` into the output: when, how it was called, how it ended."""

    started: str = Field(default_factory=now)
    finished: str | None = None
    argv: list[str] = Field(default_factory=list)
    status: RunStatus = "running"
    spec: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Entry):
    """The whole manifest. ``view``/``detector``/``source`` are set on a view's output."""

    schema_version: str = ""
    created: str = Field(default_factory=now)
    updated: str | None = None
    castillo_version: str | None = None
    cells: dict[str, CellEntry] = Field(default_factory=dict)
    runs: list[RunRecord] = Field(default_factory=list)
    imports: list[dict[str, Any]] = Field(default_factory=list)
    rescores: list[dict[str, Any]] = Field(default_factory=list)
    view: str | None = None
    detector: str | None = None
    source: str | None = None

    def cell(self, config_hash: str, model: str, dataset: str) -> CellEntry:
        """The entry of a cell, created on first use."""
        entry = self.cells.get(config_hash)
        if entry is None:
            entry = self.cells[config_hash] = CellEntry(model=model, dataset=dataset)
        return entry


def read_manifest(out: str | Path) -> Manifest:
    """The manifest of ``out``, or a new empty one when the output has none yet."""
    from castillo_core.engine.schema import SCHEMA_VERSION

    path = Path(out) / MANIFEST
    if not path.exists():
        return Manifest(schema_version=SCHEMA_VERSION)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"{path} is not valid JSON ({exc}); restore it or move it away (the parts are intact)"
        ) from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} does not look like a castillo manifest (not a JSON object)")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StoreError(f"{path} does not look like a castillo manifest: {where}: {first['msg']}") from None


def write_manifest(out: str | Path, manifest: Manifest) -> None:
    """Write ``manifest`` into ``out`` atomically (a reader never sees half a file)."""
    from castillo_core.engine.store import atomic_write_bytes

    manifest.updated = now()
    data = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True, default=str).encode()
    atomic_write_bytes(Path(out) / MANIFEST, data)
