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


SUMMARY_FIELDS = (
    "model",
    "dataset",
    "status",
    "prompts",
    "prompts_total",
    "mean_length",
    "mean_std",
    "mean_cv",
    "share_capped",
    "error",
)
SUMMARY_CAPTION = (
    "mean: mean response length (tokens); std: mean of the per-prompt standard deviations; "
    "CV: mean of the per-prompt std/mean; capped: share of completions that hit max_new_tokens"
)


def summary_rows(out: str, cells: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """``castillo show``'s rows: per model x dataset (only ``cells`` when given), lengths and status."""
    from castillo_core.engine.dataset import read_table, summarize

    columns = ["model", "dataset", "output_mean", "output_std", "n_length_capped", "n_samples"]
    rows = _with_status(out, summarize(read_table(out, "prompts", columns=columns)))
    return [r for r in rows if cells is None or (r["model"], r["dataset"]) in cells]


def show_summary(out: str, as_json: bool, as_csv: bool = False) -> None:
    """Per model x dataset: prompts, lengths, and the cell's status from the manifest."""
    from castillo_core.cli.tables import print_csv, print_json

    rows = summary_rows(out)
    if as_json:
        print_json(rows)
    elif as_csv:
        print_csv(SUMMARY_FIELDS, rows)
    else:
        print_summary(rows, f"castillo show {out}", empty=f"{out} holds no prompts yet")


def print_summary(rows: list[dict[str, Any]], title: str, empty: str, console: Any = None) -> None:
    """The length table of ``castillo show`` (and of the end of ``castillo run``)."""
    from castillo_core.cli.tables import Column, fmt, print_table

    console = console or _console()
    columns = [
        Column("model"),
        Column("dataset"),
        Column("status"),
        Column("prompts", numeric=True),
        Column("mean", numeric=True),
        Column("std", numeric=True),
        Column("CV", numeric=True),
        Column("capped", numeric=True),
    ]
    table, styles = [], []
    for r in rows:
        capped = fmt(100 * r["share_capped"], ".1f") + "%" if r.get("share_capped") is not None else "-"
        lengths = [fmt(r.get("mean_length"), ".1f"), fmt(r.get("mean_std"), ".1f"), fmt(r.get("mean_cv"), ".3f")]
        table.append([r["model"], r["dataset"], r["status"], _count(r), *lengths, capped])
        styles.append(
            {"failed": "red", "partial": "yellow", "interrupted": "yellow", "running": "yellow"}.get(r["status"])
        )
    if rows:
        print_table(console, columns, table, title=title, caption=SUMMARY_CAPTION, group=True, styles=styles)
    else:
        console.print(empty, markup=False, highlight=False)
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
