"""Where a dataset's numbers came from: its manifest and its parts' metadata, as display rows.

Shared by the report and the exports (the HF card's provenance table): one row per
distinct (model, backend, revision, decoding, hardware, castillo version).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from castillo_core import StoreError, read_manifest

log = logging.getLogger(__name__)


def read_manifest_dict(out: Path) -> dict[str, Any]:
    """The output's manifest as a dict, or an empty one (views and foreign copies may lack it)."""
    try:
        return read_manifest(out).model_dump(mode="json") if (out / "manifest.json").exists() else {}
    except StoreError as exc:
        log.warning("%s; provenance will come from the parts only", exc)
        return {}


def read_part_metadata(out: Path) -> dict[str, dict[str, Any]]:
    """Per config hash, the ``castillo`` key-value metadata of one of its Parquet parts."""
    found: dict[str, dict[str, Any]] = {}
    base = out / "prompts"
    if not base.exists():
        return found
    for part in sorted(base.rglob("part-*.parquet")):
        if any(s.startswith((".", "_")) for s in part.relative_to(out).parts):
            continue
        prefix = part.name.split("-")[1] if part.name.count("-") >= 2 else ""
        if prefix and any(h.startswith(prefix) for h in found):
            continue  # one part per cell is enough: they all carry the same provenance
        try:
            meta = pq.read_schema(part).metadata or {}
            blob = json.loads(meta.get(b"castillo", b"{}"))
        except (OSError, pa.ArrowInvalid, json.JSONDecodeError):
            continue
        config_hash = blob.get("config_hash")
        if config_hash:
            found.setdefault(config_hash, blob)
    return found


def _decoding(config: dict[str, Any], prov: dict[str, Any]) -> str:
    """The decoding settings applied, as one short line (the sampling values actually used)."""
    sampling = prov.get("sampling") or config.get("sampling") or {}
    generation = prov.get("generation") or config.get("generation") or {}
    parts = []
    for key, label in (("temperature", "temp"), ("temp", "temp"), ("top_p", "top_p"), ("top_k", "top_k")):
        if key in sampling and sampling[key] is not None:
            parts.append(f"{label}={sampling[key]}")
    for key, off in (("min_p", 0.0), ("repetition_penalty", 1.0)):
        if sampling.get(key) not in (None, off):
            parts.append(f"{key}={sampling[key]}")
    if sampling.get("source"):
        parts.append(f"({sampling['source']})")
    n = generation.get("n")
    if n:
        parts.append(f"n={n}")
    cap = generation.get("max_new_tokens", config.get("max_new_tokens"))
    if cap is not None:
        parts.append(f"max_new_tokens={cap}")
    if generation.get("max_prompt_tokens") is not None:
        parts.append(f"max_prompt_tokens={generation['max_prompt_tokens']}")
    if generation.get("seed") is not None:
        parts.append(f"seed={generation['seed']}")
    return " ".join(dict.fromkeys(parts)) or "-"


def provenance(table: pa.Table, manifest: dict[str, Any], metadata: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct (model, backend, revision, decoding, hardware, version), datasets listed.

    The manifest's cells come first; a cell it lacks (a view, a copy of some parts) is
    described from its parts' Parquet metadata. Only cells present in the table count.
    """
    hashes = sorted(set(table.column("config_hash").drop_null().to_pylist())) if table.num_rows else []
    cells = manifest.get("cells", {})
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for config_hash in hashes:
        cell = cells.get(config_hash, {})
        blob = metadata.get(config_hash, {})
        prov = cell.get("provenance") or blob.get("provenance") or {}
        config = cell.get("config") or prov
        model = prov.get("model") or cell.get("model_id") or config.get("model") or cell.get("model") or "?"
        dataset = cell.get("dataset") or config.get("dataset") or (config.get("corpus") or {}).get("dataset") or "?"
        source = config.get("source") or prov.get("source")
        row = {
            "model": str(model),
            "revision": str(prov.get("model_revision") or config.get("revision") or "-"),
            "backend": str(cell.get("backend") or prov.get("backend") or config.get("backend") or "-"),
            "dtype": str(prov.get("dtype") or config.get("dtype") or "-"),
            "decoding": _decoding(config, prov),
            "hardware": str(prov.get("hardware") or "-"),
            "castillo_version": str(prov.get("castillo_version") or manifest.get("castillo_version") or "-"),
            "source": str(source or "castillo run"),
        }
        key = tuple(row.values())
        entry = groups.setdefault(key, {**row, "datasets": [], "cells": 0})
        entry["datasets"].append(str(dataset))
        entry["cells"] += 1
    out = []
    for entry in groups.values():
        entry["datasets"] = sorted(set(entry["datasets"]))
        out.append(entry)
    return sorted(out, key=lambda e: (e["model"], e["backend"], e["decoding"]))
