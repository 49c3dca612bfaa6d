"""``castillo plugins``, ``castillo list`` and ``castillo show``: read-only views.

None of these may import a heavy library: listing a backend reports whether its
library is installed by looking for it (``find_spec``), never by importing it.
"""

from __future__ import annotations

import json
from typing import Any

from castillo_core.plugins import get_plugins


def _console() -> Any:
    from rich.console import Console

    return Console()


def _table(title: str, columns: list[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def show_plugins(as_json: bool) -> None:
    plugins = get_plugins()
    records = sorted(plugins.records.values(), key=lambda r: (r.status == "builtin", r.name))
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return
    table = _table("castillo plugins", ["plugin", "distribution", "version", "status", "provides / error"])
    for r in records:
        detail = "\n".join(filter(None, [", ".join(r.provides), r.error, *r.conflicts])) or "-"
        style = {"failed": "red", "partial": "yellow", "disabled": "dim"}.get(r.status)
        if r.conflicts and style is None:
            style = "yellow"
        table.add_row(r.name, r.distribution, r.version, r.status, detail, style=style)
    console = _console()
    console.print(table)
    unavailable = [e for e in plugins.entries("backend") if not e.available]
    for entry in unavailable:
        hint = getattr(entry.cls, "install_hint", "") or "install its library"
        console.print(
            f"backend {entry.name}: needs {', '.join(entry.missing())} ({hint})", style="yellow", markup=False
        )


def backend_rows() -> list[dict[str, Any]]:
    rows = []
    for entry in get_plugins().entries("backend"):
        cls: Any = entry.cls
        missing = entry.missing()
        try:
            aliases = cls.model_aliases()
        except Exception as exc:  # noqa: BLE001 - a listing must not die on one plugin
            aliases = {"(error)": str(exc)}
        rows.append(
            {
                "name": entry.name,
                "aliases": [a for a in entry.aliases if a != entry.name],
                "plugin": entry.plugin,
                "available": not missing,
                "missing": missing,
                "install": cls.install_hint if missing else "",
                "default_model": cls.default_model,
                "model_aliases": aliases,
                "description": cls.description,
            }
        )
    return rows


def corpus_rows() -> list[dict[str, Any]]:
    rows = []
    for entry in get_plugins().entries("corpus"):
        cls: Any = entry.cls
        rows.append(
            {
                "name": entry.name,
                "dataset": cls.dataset,
                "plugin": entry.plugin,
                "source": cls.source_note,
                "size": cls.size,
                "license": cls.license,
                "default_split": cls.default_split,
                "available": not entry.missing(),
                "missing": entry.missing(),
                "description": cls.description,
            }
        )
    return rows


def metric_rows(kind: str = "metric") -> list[dict[str, Any]]:
    """Rows for kinds described only by name, availability and description."""
    rows = []
    for entry in get_plugins().entries(kind):
        cls: Any = entry.cls
        rows.append(
            {
                "name": entry.name,
                "plugin": entry.plugin,
                "available": not entry.missing(),
                "missing": entry.missing(),
                "description": cls.description,
            }
        )
    return rows


def metric_detail_rows() -> list[dict[str, Any]]:
    """Metrics with whether each runs by default and the options it takes (``-M NAME.KEY=VALUE``)."""
    rows = metric_rows("metric")
    for row, entry in zip(rows, get_plugins().entries("metric"), strict=True):
        cls: Any = entry.cls
        fields = cls.Options.model_fields if cls.Options is not None else {}
        row["default"] = bool(cls.runs_by_default())
        row["options"] = {
            name: {
                "required": f.is_required(),
                "default": None if f.is_required() else f.get_default(call_default_factory=True),
                "description": f.description or "",
            }
            for name, f in fields.items()
        }
        row["version"] = cls.version
    return rows


def preset_rows() -> list[dict[str, Any]]:
    rows = []
    for entry in get_plugins().entries("preset"):
        preset: Any = entry.cls
        rows.append(
            {
                "name": entry.name,
                "plugin": entry.plugin,
                "description": preset.description,
                "models": [m.get("model") for m in preset.models],
                "corpora": [c.get("name") for c in preset.corpora],
                "generation": preset.generation,
            }
        )
    return rows


def show_list(kind: str, as_json: bool) -> None:
    rows = {
        "backends": backend_rows,
        "corpora": corpus_rows,
        "metrics": metric_detail_rows,
        "presets": preset_rows,
        "predictors": lambda: metric_rows("predictor"),
        "executors": lambda: metric_rows("executor"),
        "views": lambda: metric_rows("view"),
    }[kind]()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    console = _console()
    if kind == "backends":
        table = _table("backends", ["name", "status", "default model", "model aliases", "description"])
        for r in rows:
            status = "available" if r["available"] else f"missing {', '.join(r['missing'])}: {r['install']}"
            aliases = "\n".join(f"{k} -> {v}" for k, v in r["model_aliases"].items()) or "-"
            name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
            table.add_row(name, status, r["default_model"] or "-", aliases, r["description"])
    elif kind == "corpora":
        table = _table("corpora", ["name", "dataset", "source", "size", "license", "split"])
        for r in rows:
            source = r["source"] + ("" if r["available"] else f" (needs {', '.join(r['missing'])})")
            table.add_row(r["name"], r["dataset"], source, str(r["size"]), r["license"], r["default_split"])
    elif kind == "metrics":
        table = _table("metrics", ["name", "status", "default", "options", "description"])
        for r in rows:
            options = "\n".join(
                f"{k}{'' if o['required'] else '=' + str(o['default'])}" + (" (required)" if o["required"] else "")
                for k, o in r["options"].items()
            )
            status = "available" if r["available"] else f"missing {', '.join(r['missing'])}"
            table.add_row(r["name"], status, "yes" if r["default"] else "no", options or "-", r["description"])
    elif kind == "presets":
        table = _table("presets", ["name", "models", "corpora", "description"])
        for r in rows:
            table.add_row(r["name"], str(len(r["models"])), ", ".join(str(c) for c in r["corpora"]), r["description"])
    else:
        table = _table(kind, ["name", "status", "description"])
        for r in rows:
            table.add_row(
                r["name"], "available" if r["available"] else f"missing {', '.join(r['missing'])}", r["description"]
            )
    console.print(table)


def show_summary(out: str, as_json: bool) -> None:
    """Per model x dataset: prompts, lengths, and the cell's status from the manifest."""
    from castillo_core.engine.dataset import read_table, summarize

    columns = ["model", "dataset", "output_mean", "output_std", "n_length_capped", "n_samples"]
    rows = _with_status(out, summarize(read_table(out, "prompts", columns=columns)))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    headers = ["model", "dataset", "status", "prompts", "mean length", "mean std", "CV", "capped"]
    table = _table(f"castillo show {out}", headers)
    for r in rows:
        capped = f"{100 * r['share_capped']:.1f}%" if "share_capped" in r else "-"
        style = {"failed": "red", "partial": "yellow", "interrupted": "yellow", "running": "yellow"}.get(r["status"])
        numbers = [f"{r[k]:.1f}" if r.get(k) is not None else "-" for k in ("mean_length", "mean_std")]
        cv = f"{r['mean_cv']:.3f}" if r.get("mean_cv") is not None else "-"
        table.add_row(r["model"], r["dataset"], r["status"], _count(r), *numbers, cv, capped, style=style)
    console = _console()
    console.print(table)
    if not rows:
        console.print(f"{out} holds no prompts yet")
    for r in rows:
        if r.get("error"):
            console.print(f"{r['model']} x {r['dataset']}: {r['error']}", style="red", markup=False, highlight=False)


def _count(row: dict[str, Any]) -> str:
    total = row.get("prompts_total")
    return f"{row['prompts']}/{total}" if total and total != row["prompts"] else str(row["prompts"])


def _with_status(out: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each summary row with its cell's status: done, partial (prompts left), failed, running, interrupted."""
    from castillo_core.api.errors import StoreError
    from castillo_core.engine.manifest import read_manifest

    try:
        cells = list(read_manifest(out).cells.values())
    except StoreError:
        cells = []
    by_key = {(c.model, c.dataset): c for c in cells}
    for row in rows:
        row.setdefault("status", "done")
    seen = {(r["model"], r["dataset"]) for r in rows}
    rows += [
        {"model": c.model, "dataset": c.dataset, "prompts": 0, "status": "failed"}
        for c in cells
        if (c.model, c.dataset) not in seen and c.status == "failed"
    ]
    for row in rows:
        cell = by_key.get((row["model"], row["dataset"]))
        if cell is None:
            continue
        row["prompts_total"] = cell.prompts_total
        status: str = cell.status
        if status in {"done", "skipped"} and cell.prompts_total is not None and row["prompts"] < cell.prompts_total:
            status = "partial"
        row["status"] = status
        if cell.errors and status != "done":
            row["error"] = cell.errors[-1]
    return sorted(rows, key=lambda r: (r["model"], r["dataset"]))
