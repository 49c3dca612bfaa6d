"""The comparison for people: a terminal table (80 columns and up), a static HTML page, Markdown.

Everything is rendered from :func:`castillo_compare.compare.compare_runs`'s dict. Numbers
are formatted once here (``_Row``) and never cut: the terminal's metric table has fixed,
narrow columns, and the top-movers table gives the prompt text what is left of the width
(ellipsized), never the numbers. Text that comes from the data (model and dataset names,
prompt texts, paths) is never read as Rich markup and is escaped in HTML and Markdown.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

_PROMPT_CHARS = 160  # prompt text shown in HTML and Markdown (the JSON has all of it)


# -- numbers ------------------------------------------------------------------------------------


def _num(value: float | None, digits: int, sign: bool = False, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    if text.lstrip("+-").strip("0.") == "":  # -0.0 and +0.0 read as 0
        text = f"{0.0:+.{digits}f}" if sign else f"{0.0:.{digits}f}"
    return text + unit


def _ci(bounds: list[float | None] | None, digits: int, scale: float = 1.0, unit: str = "") -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "n/a"
    return f"[{_num(bounds[0] * scale, digits, True)}, {_num(bounds[1] * scale, digits, True)}]{unit}"


@dataclass
class _Row:
    label: str
    a: str
    b: str
    change: str
    ci: str


def _metric_rows(cell: dict[str, Any]) -> list[_Row]:
    mean, cv, capped = cell["mean_length"], cell["cv"], cell["capped_share"]
    pct = 100.0

    def share(value: float | None) -> str:
        return _num(None if value is None else value * pct, 1, unit="%")

    return [
        _Row("mean length", _num(mean["a"], 1), _num(mean["b"], 1), _num(mean["change"], 1, True), _ci(mean["ci"], 1)),
        _Row(
            "  relative",
            "",
            "",
            _num(None if mean["relative_change"] is None else mean["relative_change"] * pct, 1, True, "%"),
            _ci(mean["relative_ci"], 1, pct, "%"),
        ),
        _Row("CV", _num(cv["a"], 3), _num(cv["b"], 3), _num(cv["change"], 3, True), _ci(cv["ci"], 3)),
        _Row(
            "capped",
            share(capped["a"]),
            share(capped["b"]),
            _num(None if capped["change"] is None else capped["change"] * pct, 1, True, " pp"),
            _ci(capped["ci"], 1, pct, " pp"),
        ),
    ]


def _title(cell: dict[str, Any]) -> str:
    if cell["model_a"] == cell["model_b"]:
        return f"{cell['model_a']} × {cell['dataset']}"
    return f"{cell['dataset']}: {cell['model_a']} → {cell['model_b']}"


def _matched(cell: dict[str, Any]) -> str:
    return f"{cell['matched']} matched prompts (A {cell['prompts_a']}, B {cell['prompts_b']})"


def _distances_line(cell: dict[str, Any]) -> str:
    w1, ks = cell["wasserstein"], cell["ks"]
    return (
        f"per prompt: Wasserstein-1 mean {_num(w1['mean'], 1)} tokens (max {_num(w1['max'], 1)}), "
        f"KS mean {_num(ks['mean'], 2)} (max {_num(ks['max'], 2)}); "
        f"B longer on {cell['longer']}, shorter on {cell['shorter']} of {cell['matched']}"
    )


def _mover_numbers(mover: dict[str, Any]) -> list[str]:
    return [_num(mover["mean_a"], 1), _num(mover["mean_b"], 1), _num(mover["wasserstein"], 1), _num(mover["ks"], 2)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shorten(text: str, limit: int) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def _runs_lines(result: dict[str, Any]) -> list[str]:
    by = "per model x dataset" if result["by"] == "cell" else "per dataset, across models"
    boot = result["bootstrap"]
    return [
        *(_side_line(side, result[side.lower()]) for side in ("A", "B")),
        f"matched {by}; change = B - A; {_confidence(result)} CI: paired bootstrap over prompts "
        f"({boot['resamples']} resamples, seed {boot['seed']})",
    ]


def _side_line(side: str, run: dict[str, Any]) -> str:
    where = "" if run["label"] == run["path"] else f" ({run['path']})"
    return f"{side}: {run['label']}{where}, {run['prompts']} prompts of {', '.join(run['models'])}"


def _confidence(result: dict[str, Any]) -> str:
    return f"{result['bootstrap']['confidence'] * 100:g}%"


def _unmatched_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for cell in result["unmatched"]:
        models = " / ".join(m for m in (cell["model_a"], cell["model_b"]) if m)
        lines.append(
            f"not compared: {models} × {cell['dataset']}, {cell['reason']} "
            f"(A {cell['prompts_a']}, B {cell['prompts_b']} prompts)"
        )
    return lines


# -- terminal -----------------------------------------------------------------------------------


def print_terminal(result: dict[str, Any], console: Any = None) -> None:
    """The comparison as rich tables; fits 80 columns without cutting a number."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    for line in _runs_lines(result):
        console.print(Text(line))
    for cell in result["cells"]:
        console.print()
        heading = Text(_title(cell), style="bold")
        heading.append(f"  {_matched(cell)}", style="")
        console.print(heading)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for name, justify in (("", "left"), ("A", "right"), ("B", "right"), ("change", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_column(f"{_confidence(result)} CI", no_wrap=True)
        for row in _metric_rows(cell):
            table.add_row(*(Text(v) for v in (row.label, row.a, row.b, row.change, row.ci)))
        console.print(table)
        console.print(Text(_distances_line(cell)))
        movers = cell["top_movers"]
        if not movers:
            console.print(Text("no prompt's length distribution moved (every Wasserstein-1 distance is 0)"))
            continue
        console.print(_movers_table(movers, console.width))
    for line in _unmatched_lines(result):
        console.print(Text(line, style="dim"))


def _movers_table(movers: list[dict[str, Any]], width: int) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    headers = ["A mean", "B mean", "W1", "KS"]
    numbers = [_mover_numbers(m) for m in movers]
    widths = [max(len(h), *(len(row[i]) for row in numbers)) for i, h in enumerate(headers)]
    # SIMPLE_HEAD without edges: one space of padding each side of every inner column border
    prompt_width = max(12, width - sum(widths) - 3 * len(widths))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left")
    table.add_column("prompts that moved most", width=prompt_width, no_wrap=True, overflow="ellipsis")
    for header, w in zip(headers, widths, strict=True):
        table.add_column(header, justify="right", no_wrap=True, min_width=w)
    for mover, row in zip(movers, numbers, strict=True):
        table.add_row(Text(_shorten(mover["prompt_text"] or mover["prompt_id"], prompt_width)), *map(Text, row))
    return table


# -- Markdown -----------------------------------------------------------------------------------


_MD_SPECIAL = "\\`*_[]|"  # backslash first: it escapes the others


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no HTML, no link, no emphasis, no pipe."""
    text = _one_line(text)
    for char in _MD_SPECIAL:
        text = text.replace(char, "\\" + char)
    return html.escape(text, quote=False)


def to_markdown(result: dict[str, Any]) -> str:
    out = ["## castillo compare", ""]
    out += [f"- {_md(line)}" for line in _runs_lines(result)]
    for cell in result["cells"]:
        out += ["", f"### {_md(_title(cell))}", "", _md(_matched(cell)), ""]
        out += [f"| | A | B | change | {_confidence(result)} CI |", "|---|---:|---:|---:|---|"]
        for row in _metric_rows(cell):
            out.append(f"| {row.label.strip()} | {row.a} | {row.b} | {row.change} | {row.ci} |")
        out += ["", _md(_distances_line(cell)), ""]
        if cell["top_movers"]:
            out += ["| prompt that moved most | A mean | B mean | W1 | KS |", "|---|---:|---:|---:|---:|"]
            for mover in cell["top_movers"]:
                text = _md(_shorten(mover["prompt_text"] or mover["prompt_id"], _PROMPT_CHARS))
                out.append(f"| {text} | " + " | ".join(_mover_numbers(mover)) + " |")
    unmatched = _unmatched_lines(result)
    if unmatched:
        out += ["", *(f"- {_md(line)}" for line in unmatched)]
    return "\n".join(out) + "\n"


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { padding: 0.25em 0.75em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.prompt { max-width: 36em; overflow-wrap: anywhere; }
.note { color: #555; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def to_html(result: dict[str, Any]) -> str:
    """A self-contained page: no script, no external resource, every piece of data escaped."""
    title = f"castillo compare: {result['a']['label']} vs {result['b']['label']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        "<ul>" + "".join(f"<li>{_e(line)}</li>" for line in _runs_lines(result)) + "</ul>",
    ]
    for cell in result["cells"]:
        parts.append(f"<section><h2>{_e(_title(cell))}</h2><p class=note>{_e(_matched(cell))}</p>")
        parts.append(
            "<table><thead><tr><th></th><th>A</th><th>B</th><th>change</th>"
            f"<th>{_e(_confidence(result))} CI</th></tr></thead><tbody>"
        )
        for row in _metric_rows(cell):
            cells = "".join(f"<td>{_e(v)}</td>" for v in (row.label.strip(), row.a, row.b, row.change, row.ci))
            parts.append(f"<tr>{cells}</tr>")
        parts.append(f"</tbody></table><p class=note>{_e(_distances_line(cell))}</p>")
        if cell["top_movers"]:
            parts.append(
                "<table><thead><tr><th>prompt that moved most</th><th>A mean</th><th>B mean</th>"
                "<th>W1</th><th>KS</th></tr></thead><tbody>"
            )
            for mover in cell["top_movers"]:
                full = mover["prompt_text"] or mover["prompt_id"]
                numbers = "".join(f"<td>{_e(v)}</td>" for v in _mover_numbers(mover))
                parts.append(
                    f'<tr><td class=prompt title="{_e(_one_line(full))}">{_e(_shorten(full, _PROMPT_CHARS))}</td>'
                    f"{numbers}</tr>"
                )
            parts.append("</tbody></table>")
        parts.append("</section>")
    unmatched = _unmatched_lines(result)
    if unmatched:
        parts.append("<ul class=note>" + "".join(f"<li>{_e(line)}</li>" for line in unmatched) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
