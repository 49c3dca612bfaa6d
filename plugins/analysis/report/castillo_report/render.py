"""The report's pages: a static HTML page, a Markdown summary and the numbers as JSON.

The HTML page has its CSS inline, no script, and refers only to the PNG files beside it,
so it opens from disk, offline, in any browser, and can be copied or attached as a folder.
``summary.json`` holds every number the page shows (tests and other tools read it instead
of scraping HTML).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from castillo_report.data import ReportData
from castillo_report.plots import Figure

MAX_TABLE_ROWS = 200

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1400px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:0 0 16px}
table{border-collapse:collapse;font-size:13px;margin:8px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:16px 0;background:#fff;border:1px solid #e3e3e3;padding:8px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto}
figcaption{font-size:13px;color:#444;margin-top:4px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
code{background:#f0f0f0;padding:0 3px}
summary{cursor:pointer;margin:8px 0}
"""

_CELL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"),
    ("dataset", "dataset", "s"),
    ("prompts", "prompts", "d"),
    ("responses", "responses", "d"),
    ("mean_length", "mean length", ".1f"),
    ("mean_std", "mean std", ".1f"),
    ("mean_cv", "mean CV", ".3f"),
    ("share_capped", "capped", ".2%"),
)


def _cell_columns(data: ReportData) -> list[tuple[str, str, str]]:
    columns = list(_CELL_COLUMNS)
    for name in data.degeneration_sources:
        columns.append((f"degeneration_{name}", f"degenerate ({name})", ".2%"))
    columns += [("truncated", "truncated", "d"), ("rejected", "rejected", "d")]
    return columns


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if spec == "s":
        return str(value)
    if spec == "d":
        return f"{int(value):,}"
    return format(value, spec)


def summary(data: ReportData, figures: Sequence[Figure], version: str, generated: str) -> dict[str, Any]:
    """Everything the page shows, as plain JSON (NaN written as null)."""
    return {
        "source": data.source,
        "generated": generated,
        "castillo_version": version,
        "rows": data.rows,
        "models": data.models,
        "datasets": data.datasets,
        "degeneration_sources": data.degeneration_sources,
        "cells": data.cells,
        "provenance": data.provenance,
        "truncated": data.truncated,
        "rejected": data.rejected,
        "rejected_total": data.rejected_total,
        "figures": [{"file": f.file, "title": f.title, "caption": f.caption} for f in figures],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


# -- HTML ---------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="n">{_e(v)}</td>' if num else f"<td>{_e(v)}</td>" for v, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure_html(figure: Figure) -> str:
    size = f' width="{figure.width}" height="{figure.height}"' if figure.width else ""
    return (
        f'<figure><img src="{_e(figure.file)}" alt="{_e(figure.title)}"{size} loading="eager">'
        f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)}</figcaption></figure>"
    )


def _provenance_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "revision", "backend", "dtype", "decoding", "hardware", "castillo", "source", "datasets"]
    rows = [
        [
            p["model"],
            p["revision"],
            p["backend"],
            p["dtype"],
            p["decoding"],
            p["hardware"],
            p["castillo_version"],
            p["source"],
            ", ".join(p["datasets"]),
        ]
        for p in data.provenance
    ]
    return headers, rows


def _issue_tables(data: ReportData) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    t_headers = ["model", "dataset", "split", "prompt_id", "input_size", "max_prompt_tokens"]
    truncated = [[_fmt(r.get(h), "s") for h in t_headers] for r in data.truncated[:MAX_TABLE_ROWS]]
    r_headers = ["model", "dataset", "source", "index", "reason"]
    rejected = [[_fmt(r.get(h), "s") for h in r_headers] for r in data.rejected[:MAX_TABLE_ROWS]]
    return (t_headers, truncated), (r_headers, rejected)


def write_html(path: Path, data: ReportData, figures: Sequence[Figure], version: str, generated: str) -> None:
    """The report page: heatmaps, cells table, distributions, provenance, rejected/truncated prompts.

    The heatmaps come first (the answer at a glance); the cells table, which runs to a
    hundred rows for a CASTILLO-sized grid, folds away (``<details>``, no script needed).
    """
    columns = _cell_columns(data)
    cell_rows = [[_fmt(c.get(k), spec) for k, _, spec in columns] for c in data.cells]
    heat = [f for f in figures if f.file.startswith("heatmap_")]
    other = [f for f in figures if not f.file.startswith("heatmap_")]
    p_headers, p_rows = _provenance_rows(data)
    (t_headers, t_rows), (r_headers, r_rows) = _issue_tables(data)
    responses = sum(c["responses"] for c in data.cells)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>castillo report: {_e(data.source)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>castillo report</h1>",
        f'<p class="meta">{_e(data.source)} · {data.rows:,} prompt rows · {responses:,} responses · '
        f"{len(data.models)} model(s) x {len(data.datasets)} dataset(s) · castillo {_e(version)} · {_e(generated)}</p>",
        "<h2>Heatmaps</h2>",
        '<div class="grid">' + "".join(_figure_html(f) for f in heat) + "</div>",
        "<p>Degeneration: "
        + "; ".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in data.degeneration_sources.items())
        + ". A prompt is degenerate when any of its samples is flagged.</p>",
        "<h2>Per model and dataset</h2>",
        f"<details{' open' if len(cell_rows) <= 30 else ''}><summary>{len(cell_rows)} model x dataset cell(s)"
        "</summary>",
        _html_table([h for _, h, _ in columns], cell_rows, [s != "s" for _, _, s in columns]),
        "</details>",
        "<h2>Distributions</h2>",
        "".join(_figure_html(f) for f in other),
        "<h2>Provenance</h2>",
        _html_table(p_headers, p_rows, [False] * len(p_headers)) if p_rows else "<p>No provenance recorded.</p>",
        "<h2>Truncated prompts</h2>",
        _issues_html(t_headers, t_rows, len(data.truncated), "prompts were truncated to max_prompt_tokens"),
        "<h2>Rejected corpus records</h2>",
        _issues_html(r_headers, r_rows, data.rejected_total, "corpus records were rejected"),
        "</main></body></html>",
    ]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def _issues_html(headers: list[str], rows: list[list[str]], total: int, what: str) -> str:
    if not total:
        return "<p>None.</p>"
    note = f"<p>{total:,} {_e(what)}"
    note += f"; the first {len(rows):,} are listed.</p>" if len(rows) < total else ".</p>"
    return note + (_html_table(headers, rows, [False] * len(headers)) if rows else "")


# -- Markdown -------------------------------------------------------------------------


_MD_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "$": "\\$", "[": "\\[", "]": "\\]", "<": "&lt;"})


def _md_cell(value: str) -> str:
    """Text from the data as Markdown text: no table break, link, HTML or math (``$...$``) in it."""
    return " ".join(value.translate(_MD_ESCAPES).splitlines())


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return lines


def write_markdown(path: Path, data: ReportData, figures: Sequence[Figure], version: str, generated: str) -> None:
    """The same report as Markdown, with the PNGs linked: for READMEs, issues and pull requests."""
    columns = _cell_columns(data)
    lines = [
        "# castillo report",
        "",
        f"`{data.source}`: {data.rows:,} prompt rows, {len(data.models)} model(s) x {len(data.datasets)} dataset(s), "
        f"castillo {version}, {generated}.",
        "",
        "## Per model and dataset",
        "",
        *_md_table([h for _, h, _ in columns], [[_fmt(c.get(k), s) for k, _, s in columns] for c in data.cells]),
        "",
        "Degeneration: " + "; ".join(_md_cell(f"{k}: {v}") for k, v in data.degeneration_sources.items()) + ".",
        "",
        "## Figures",
        "",
    ]
    for figure in figures:
        title, caption = _md_cell(figure.title), _md_cell(figure.caption)
        lines += [f"### {title}", "", f"![{title}]({figure.file})", "", caption, ""]
    p_headers, p_rows = _provenance_rows(data)
    lines += ["## Provenance", "", *(_md_table(p_headers, p_rows) if p_rows else ["No provenance recorded."]), ""]
    (t_headers, t_rows), (r_headers, r_rows) = _issue_tables(data)
    lines += ["## Truncated prompts", ""]
    lines += _md_table(t_headers, t_rows) if t_rows else ["None."]
    if len(data.truncated) > len(t_rows):
        lines += ["", f"... and {len(data.truncated) - len(t_rows):,} more (see summary.json)."]
    lines += ["", "## Rejected corpus records", ""]
    lines += _md_table(r_headers, r_rows) if r_rows else ["None." if not data.rejected_total else ""]
    if data.rejected_total > len(r_rows):
        lines += ["", f"{data.rejected_total:,} rejected in all (the manifest keeps up to 100 per cell)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
