"""The report's pages: a static HTML page, a Markdown summary and the numbers as JSON.

The HTML page has its CSS inline, no script, and refers only to the PNG files beside it,
so it opens from disk, offline, in any browser, and can be copied or attached as a folder.
``summary.json`` holds every number the page shows (tests and other tools read it instead
of scraping HTML). Numbers are written with :mod:`castillo_report.labels`' formats, the
figures' own, so a rate reads the same in a table and on a colour bar.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from castillo_core import V1_DETECTOR, V1_MAX_NEW_TOKENS
from castillo_report.data import ReportData
from castillo_report.figures import SANITIZED_NAME, Figure
from castillo_report.labels import NOT_RECORDED, percent, ratio

MAX_TABLE_ROWS = 200
OPEN_ROWS = 30
"""Tables longer than this start folded (``<details>``)."""

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1400px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{margin:1.2em 0 .4em;font-size:1.05em}
.meta{color:#555;margin:0 0 16px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;max-width:1000px}
.wide{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:8px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#888;font-style:italic}
figure{margin:16px 0;background:#fff;border:1px solid #e3e3e3;padding:8px;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto}
figcaption{font-size:13px;color:#444;margin-top:4px;max-width:1000px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
code{background:#f0f0f0;padding:0 3px}
summary{cursor:pointer;margin:8px 0}
pre.text{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;border:1px solid #e3e3e3;padding:6px;
margin:2px 0 8px;max-height:16em;overflow:auto;font-size:12px;max-width:1000px}
.examples td{max-width:560px}
"""

Column = tuple[str, str, Callable[[Any], str], bool]
"""(key in a cell, header, formatter, numeric)."""


def _count(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _length(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}"


def _cv(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _text(value: Any) -> str:
    return "–" if value is None else str(value)


def _recorded(formatter: Callable[[Any], str]) -> Callable[[Any], str]:
    """A formatter that writes "not recorded" for a field the dataset does not hold."""
    return lambda value: NOT_RECORDED if value is None else formatter(value)


def _cell_columns(data: ReportData) -> list[Column]:
    columns: list[Column] = [
        ("model", "model", _text, False),
        ("dataset", "dataset", _text, False),
        ("prompts", "prompts", _count, True),
        ("responses", "responses", _count, True),
        ("mean_length", "mean length", _length, True),
        ("mean_std", "mean std", _length, True),
        ("mean_cv", "mean CV", _cv, True),
        ("share_capped", "capped", percent, True),
    ]
    for name in data.degeneration_sources:
        columns.append((f"degeneration_{name}", f"degenerate ({name})", percent, True))
    columns += [("truncated", "truncated", _recorded(_count), True), ("rejected", "rejected", _count, True)]
    return columns


_SANITIZED_COLUMNS: tuple[Column, ...] = (
    ("model", "model", _text, False),
    ("dataset", "dataset", _text, False),
    ("prompts", "prompts", _count, True),
    ("sanitized_prompts", "prompts, sanitized", _count, True),
    ("mean_length", "mean length", _length, True),
    ("sanitized_mean_length", "mean length, sanitized", _length, True),
    ("mean_cv", "mean CV", _cv, True),
    ("sanitized_mean_cv", "mean CV, sanitized", _cv, True),
    ("share_capped", "capped", percent, True),
    ("sanitized_share_capped", "capped, sanitized", percent, True),
)

_RECORDED_COLUMNS: tuple[Column, ...] = (
    ("model", "model", _text, False),
    ("dataset", "dataset", _text, False),
    ("max_new_tokens", "cap (max_new_tokens)", _recorded(_text), True),
    ("max_prompt_tokens", "prompt cap", _recorded(_text), True),
    ("truncated", "truncated prompts", _recorded(_count), True),
    ("gen_time", "generation time (s)", _recorded(lambda v: f"{v:,.1f}"), True),
    ("tokens_per_second", "output tokens/s", lambda v: "–" if v is None else f"{v:,.1f}", True),
    ("capped_from", "capped counted from", _text, False),
    ("finish_reasons", "finish reasons", _text, False),
)


def _recorded_rows(data: ReportData) -> list[dict[str, Any]]:
    rows = []
    for cell in data.cells:
        finish = NOT_RECORDED if "finish_reasons" in cell.get("not_recorded", []) else "recorded"
        rows.append({**cell, "finish_reasons": finish})
    return rows


def _table_rows(cells: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[list[str]]:
    return [[fmt(cell.get(key)) for key, _, fmt, _ in columns] for cell in cells]


def summary(data: ReportData, figures: Sequence[Figure], version: str, generated: str) -> dict[str, Any]:
    """Everything the page shows, as plain JSON (NaN written as null)."""
    return {
        "source": data.source,
        "generated": generated,
        "castillo_version": version,
        "rows": data.rows,
        "shape": data.shape,
        "models": data.models,
        "labels": data.labels,
        "datasets": data.datasets,
        "degeneration_sources": data.degeneration_sources,
        "sanitized": {"view": SANITIZED_NAME, "available": bool(data.sanitized), "note": data.sanitized_note},
        "caps": data.caps,
        "cap_note": cap_note(data),
        "cells": data.cells,
        "examples": data.examples,
        "provenance": data.provenance,
        "truncated": data.truncated,
        "rejected": data.rejected,
        "rejected_total": data.rejected_total,
        "figures": [
            {"file": f.file, "title": f.title, "caption": f.caption, "section": f.section, "panels": f.panels}
            for f in figures
        ],
    }


def cap_note(data: ReportData) -> str:
    """Why v1's length rule may mean little for this dataset (a cap far below v1's), or ""."""
    low = [c for c in data.caps if c < V1_MAX_NEW_TOKENS // 10]
    if not low:
        return ""
    caps = ", ".join(f"{c:,}" for c in data.caps)
    return (
        f"v1's length rule counts a response that reaches the cap (cap - 1 tokens or more) as degenerate. It was "
        f"made for v1's cap of {V1_MAX_NEW_TOKENS:,}; this dataset's cap is {caps}, so the rule also flags ordinary "
        "answers that were merely cut short, and the sanitized view removes them. Read the sanitized numbers and "
        "the v1-length degeneration rate with that in mind."
    )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


# -- HTML ---------------------------------------------------------------------------


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _e(value: Any) -> str:
    """Text from the data as HTML text: escaped, control characters (a NUL breaks HTML) as U+FFFD."""
    return html.escape(_UNPRINTABLE.sub("\ufffd", str(value)), quote=True)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value, num in zip(row, numeric, strict=True):
            kind = "missing" if value == NOT_RECORDED else "n" if num else ""
            cells.append(f'<td class="{kind}">{_e(value)}</td>' if kind else f"<td>{_e(value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _columns_table(cells: Sequence[dict[str, Any]], columns: Sequence[Column], what: str) -> str:
    table = _html_table([h for _, h, _, _ in columns], _table_rows(cells, columns), [n for *_, n in columns])
    opened = " open" if len(cells) <= OPEN_ROWS else ""
    return f"<details{opened}><summary>{len(cells):,} {_e(what)}</summary>{table}</details>"


def _figure_html(figure: Figure) -> str:
    size = f' width="{figure.width}" height="{figure.height}"' if figure.width else ""
    return (
        f'<figure><img src="{_e(figure.file)}" alt="{_e(figure.title)}"{size} loading="eager">'
        f"<figcaption><b>{_e(figure.title)}.</b> {_e(figure.caption)}</figcaption></figure>"
    )


def _provenance_rows(data: ReportData) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "revision", "backend", "dtype", "decoding", "hardware", "castillo", "source", "datasets"]
    keys = ["model", "revision", "backend", "dtype", "decoding", "hardware", "castillo_version", "source"]
    rows = []
    for p in data.provenance:
        row = [NOT_RECORDED if p.get(k) in (None, "", "-") else str(p[k]) for k in keys]
        rows.append([*row, ", ".join(p["datasets"])])
    return headers, rows


def _issue_tables(data: ReportData) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    t_headers = ["model", "dataset", "split", "prompt_id", "input_size", "max_prompt_tokens"]
    truncated = [[_text(r.get(h)) for h in t_headers] for r in data.truncated[:MAX_TABLE_ROWS]]
    r_headers = ["model", "dataset", "source", "index", "reason"]
    rejected = [[_text(r.get(h)) for h in r_headers] for r in data.rejected[:MAX_TABLE_ROWS]]
    return (t_headers, truncated), (r_headers, rejected)


def _headline(data: ReportData) -> list[tuple[str, str]]:
    """The numbers of a one-cell report, as (what, value) pairs (a heatmap of one cell says nothing)."""
    cell = data.cells[0]
    pairs = [
        ("prompts", _count(cell["prompts"])),
        ("responses", _count(cell["responses"])),
        ("mean length (tokens)", _length(cell["mean_length"])),
        ("mean intra-prompt std (tokens)", _length(cell["mean_std"])),
        ("mean coefficient of variation", ratio(cell["mean_cv"])),
        ("share of responses that hit the cap", percent(cell["share_capped"])),
    ]
    for name in data.degeneration_sources:
        pairs.append((f"degeneration rate ({name})", percent(cell.get(f"degeneration_{name}"))))
    if data.sanitized:
        pairs.append((f"mean length, {SANITIZED_NAME}", _length(cell.get("sanitized_mean_length"))))
    return pairs


def _examples_html(data: ReportData) -> str:
    if not data.examples:
        return "<p>None.</p>"
    by_cell: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for example in data.examples:
        by_cell.setdefault((example["model"], example["dataset"]), {})[example["kind"]] = example
    rows = []
    for (model, dataset), kinds in by_cell.items():
        cells = []
        for kind in ("shortest", "longest"):
            example = kinds.get(kind)
            cells.append(_example_cell(example) if example else "<td>–</td>")
        label = data.labels.get(model, model)
        rows.append(f"<tr><td>{_e(label)}</td><td>{_e(dataset)}</td>{''.join(cells)}</tr>")
    head = "<tr><th>model</th><th>dataset</th><th>shortest response</th><th>longest response</th></tr>"
    table = (
        f'<div class="wide"><table class="examples"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'
    )
    opened = " open" if len(rows) <= 6 else ""
    return f"<details{opened}><summary>{len(rows):,} model x dataset cell(s)</summary>{table}</details>"


def _cut_note(shown: str | None, total: int) -> str:
    if shown is None or len(shown) >= total:
        return ""
    return f" … ({total - len(shown):,} more characters)"


def _example_cell(example: dict[str, Any]) -> str:
    tokens = f"<b>{example['tokens']:,} tokens</b>"
    if example.get("text") is None:
        return f'<td>{tokens}<br><span class="missing">text {NOT_RECORDED}</span></td>'
    prompt = ""
    if example.get("prompt") is not None:
        prompt = (
            f'<details><summary>prompt</summary><pre class="text">{_e(example["prompt"])}'
            f"{_e(_cut_note(example['prompt'], example['prompt_chars']))}</pre></details>"
        )
    if not example["text"]:
        return f'<td>{tokens}{prompt}<br><span class="missing">(an empty text)</span></td>'
    text = f'<pre class="text">{_e(example["text"])}{_e(_cut_note(example["text"], example["text_chars"]))}</pre>'
    return f"<td>{tokens}{prompt}{text}</td>"


def _models_html(data: ReportData) -> str:
    rows = [[data.labels.get(m, m), m] for m in data.models]
    return _html_table(["label", "model id"], rows, [False, False])


def write_html(path: Path, data: ReportData, figures: Sequence[Figure], version: str, generated: str) -> None:
    """The report page: overview figures, original and sanitized, the cells, distributions, examples, provenance.

    The overview comes first (the answer at a glance); tables that run to a hundred rows
    for a CASTILLO-sized grid fold away (``<details>``, no script needed).
    """
    sections: dict[str, list[Figure]] = {}
    for figure in figures:
        sections.setdefault(figure.section, []).append(figure)
    p_headers, p_rows = _provenance_rows(data)
    (t_headers, t_rows), (r_headers, r_rows) = _issue_tables(data)
    responses = sum(c["responses"] for c in data.cells)
    note = cap_note(data)
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
        "<h2>Overview</h2>",
    ]
    if data.shape == "single":
        parts.append(
            _html_table(
                ["", data.labels.get(data.models[0], data.models[0]) + " · " + data.datasets[0]],
                _headline(data),
                [False, True],
            )
        )
    parts += [
        '<div class="grid">' + "".join(_figure_html(f) for f in sections.get("overview", [])) + "</div>",
        "<p>Degeneration: "
        + "; ".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in data.degeneration_sources.items())
        + ". A prompt is degenerate when any of its samples is flagged.</p>",
        "<h2>Original and sanitized</h2>",
        f"<p>The sanitized view (<code>castillo sanitize</code>, detector <code>{_e(V1_DETECTOR)}</code>): the samples "
        "v1's length rule flags are removed and each prompt's statistics recomputed; a prompt left with none is "
        f"dropped. {_e(data.sanitized_note[:1].upper() + data.sanitized_note[1:])}.</p>",
    ]
    if note:
        parts.append(f'<p class="note">{_e(note)}</p>')
    parts += [
        _columns_table(data.cells, _SANITIZED_COLUMNS, "model x dataset cell(s), original and sanitized"),
        "<h2>Per model and dataset</h2>",
        _columns_table(data.cells, _cell_columns(data), "model x dataset cell(s)"),
        "<h2>Distributions</h2>",
        "".join(_figure_html(f) for f in sections.get("distributions", [])),
        "<h2>Example responses</h2>",
        "<p>Per model and dataset, the shortest and the longest response (with the prompt that drew it), "
        "cut to 1,200 characters.</p>",
        _examples_html(data),
        "<h2>Models</h2>",
        "<p>Figures label models short (organisation and words such as <code>Instruct</code> left out) and order "
        "them by family, then size.</p>",
        _models_html(data),
        "<h2>Settings and what was recorded</h2>",
        f"<p>Fields a dataset does not hold (an import of CASTILLO v1 has no finish reasons, prompt cap or "
        f"truncation flags) read <i>{NOT_RECORDED}</i>.</p>",
        _columns_table(_recorded_rows(data), _RECORDED_COLUMNS, "model x dataset cell(s)"),
        "<h2>Provenance</h2>",
        _html_table(p_headers, p_rows, [False] * len(p_headers)) if p_rows else "<p>No provenance recorded.</p>",
        "<h2>Truncated prompts</h2>",
        _issues_html(t_headers, t_rows, len(data.truncated), "prompts were truncated to max_prompt_tokens", data),
        "<h2>Rejected corpus records</h2>",
        _issues_html(r_headers, r_rows, data.rejected_total, "corpus records were rejected", None),
        "</main></body></html>",
    ]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def _issues_html(headers: list[str], rows: list[list[str]], total: int, what: str, data: ReportData | None) -> str:
    if not total:
        if data is not None and all(c.get("truncated") is None for c in data.cells):
            return f"<p>{NOT_RECORDED} (the dataset holds no truncation flags).</p>"
        return "<p>None.</p>"
    note = f"<p>{total:,} {_e(what)}"
    note += f"; the first {len(rows):,} are listed.</p>" if len(rows) < total else ".</p>"
    return note + (_html_table(headers, rows, [False] * len(headers)) if rows else "")


# -- Markdown -------------------------------------------------------------------------


_MD_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "$": "\\$", "[": "\\[", "]": "\\]", "<": "&lt;"})


def _md_cell(value: str) -> str:
    """Text from the data as Markdown text: no table break, link, HTML or math (``$...$``) in it."""
    return " ".join(_UNPRINTABLE.sub("\ufffd", value).translate(_MD_ESCAPES).splitlines())


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return lines


def _md_columns(cells: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[str]:
    return _md_table([h for _, h, _, _ in columns], _table_rows(cells, columns))


def write_markdown(path: Path, data: ReportData, figures: Sequence[Figure], version: str, generated: str) -> None:
    """The same report as Markdown, with the PNGs linked: for READMEs, issues and pull requests."""
    lines = [
        "# castillo report",
        "",
        f"`{data.source}`: {data.rows:,} prompt rows, {len(data.models)} model(s) x {len(data.datasets)} dataset(s), "
        f"castillo {version}, {generated}.",
        "",
        "## Per model and dataset",
        "",
        *_md_columns(data.cells, _cell_columns(data)),
        "",
        "Degeneration: " + "; ".join(_md_cell(f"{k}: {v}") for k, v in data.degeneration_sources.items()) + ".",
        "",
        "## Original and sanitized",
        "",
        _md_cell(
            f"The sanitized view (castillo sanitize, detector {V1_DETECTOR}): the samples v1's length rule flags "
            f"are removed and each prompt's statistics recomputed; a prompt left with none is dropped. "
            f"{data.sanitized_note[:1].upper() + data.sanitized_note[1:]}."
        ),
        "",
    ]
    note = cap_note(data)
    if note:
        lines += [f"> {_md_cell(note)}", ""]
    lines += [*_md_columns(data.cells, _SANITIZED_COLUMNS), "", "## Figures", ""]
    for figure in figures:
        title, caption = _md_cell(figure.title), _md_cell(figure.caption)
        lines += [f"### {title}", "", f"![{title}]({figure.file})", "", caption, ""]
    lines += [
        "Example responses (the shortest and longest per model and dataset) are in index.html and summary.json.",
        "",
    ]
    lines += ["## Models", "", *_md_table(["label", "model id"], [[data.labels.get(m, m), m] for m in data.models]), ""]
    lines += ["## Settings and what was recorded", "", *_md_columns(_recorded_rows(data), _RECORDED_COLUMNS), ""]
    p_headers, p_rows = _provenance_rows(data)
    lines += ["## Provenance", "", *(_md_table(p_headers, p_rows) if p_rows else ["No provenance recorded."]), ""]
    (t_headers, t_rows), (r_headers, r_rows) = _issue_tables(data)
    lines += ["## Truncated prompts", ""]
    if t_rows:
        lines += _md_table(t_headers, t_rows)
    else:
        lines += [NOT_RECORDED if all(c.get("truncated") is None for c in data.cells) else "None."]
    if len(data.truncated) > len(t_rows):
        lines += ["", f"... and {len(data.truncated) - len(t_rows):,} more (see summary.json)."]
    lines += ["", "## Rejected corpus records", ""]
    lines += _md_table(r_headers, r_rows) if r_rows else ["None." if not data.rejected_total else ""]
    if data.rejected_total > len(r_rows):
        lines += ["", f"{data.rejected_total:,} rejected in all (the manifest keeps up to 100 per cell)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
