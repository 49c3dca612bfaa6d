"""``castillo plugins``, ``castillo list`` and ``castillo show``: read-only views.

None of these may import a heavy library: listing a backend reports whether its
library is installed by looking for it (``find_spec``), never by importing it.
"""

from __future__ import annotations

import json
from typing import Any

from castillo_core.plugins import get_plugins


def _console() -> Any:
    from castillo_core.cli.tables import console

    return console()


def show_plugins(as_json: bool) -> None:
    from castillo_core.cli.tables import Column, print_table

    plugins = get_plugins()
    records = sorted(plugins.records.values(), key=lambda r: (r.status == "builtin", r.name))
    if as_json:
        print(json.dumps([r.as_dict() for r in records], indent=2))
        return
    columns = [
        Column("plugin"),
        Column("distribution"),
        Column("version"),
        Column("status"),
        Column("provides / error", long=True),
    ]
    rows, styles = [], []
    for r in records:
        rows.append(
            [
                r.name,
                r.distribution,
                r.version,
                r.status,
                "\n".join(filter(None, [", ".join(r.provides), r.error, *r.conflicts])) or "-",
            ]
        )
        style = {"failed": "red", "partial": "yellow", "disabled": "dim"}.get(r.status)
        styles.append("yellow" if r.conflicts and style is None else style)
    console = _console()
    print_table(console, columns, rows, title="castillo plugins", styles=styles)
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
    from castillo_core.cli.tables import Column, print_table

    def status(r: dict[str, Any]) -> str:
        return "available" if r["available"] else f"missing {', '.join(r['missing'])}"

    table: list[list[str]] = []
    if kind == "backends":
        columns = [
            Column("name"),
            Column("status", long=True),
            Column("default model", long=True),
            Column("model aliases", long=True),
            Column("description", long=True),
        ]
        for r in rows:
            aliases = "\n".join(f"{k} -> {v}" for k, v in r["model_aliases"].items()) or "-"
            name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
            state = status(r) + (f": {r['install']}" if not r["available"] else "")
            table.append([name, state, r["default_model"] or "-", aliases, r["description"]])
    elif kind == "corpora":
        columns = [
            Column("name"),
            Column("dataset"),
            Column("source", long=True),
            Column("size", long=True),
            Column("license", long=True),
            Column("split"),
        ]
        for r in rows:
            source = r["source"] + ("" if r["available"] else f" (needs {', '.join(r['missing'])})")
            table.append([r["name"], r["dataset"], source, str(r["size"]), r["license"], r["default_split"]])
    elif kind == "metrics":
        columns = [
            Column("name"),
            Column("status"),
            Column("default"),
            Column("options", long=True),
            Column("description", long=True),
        ]
        for r in rows:
            options = "\n".join(
                f"{k}{'' if o['required'] else '=' + str(o['default'])}" + (" (required)" if o["required"] else "")
                for k, o in r["options"].items()
            )
            table.append([r["name"], status(r), "yes" if r["default"] else "no", options or "-", r["description"]])
    elif kind == "presets":
        columns = [Column("name"), Column("models", numeric=True), Column("corpora", long=True)]
        columns.append(Column("description", long=True))
        for r in rows:
            corpora = ", ".join(str(c) for c in r["corpora"])
            table.append([r["name"], str(len(r["models"])), corpora, r["description"]])
    else:
        columns = [Column("name"), Column("status"), Column("description", long=True)]
        table = [[r["name"], status(r), r["description"]] for r in rows]
    print_table(_console(), columns, table, title=kind)


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
