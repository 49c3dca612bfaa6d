"""Tables for people and for pipes: the one layout rule of castillo's tables.

On a terminal a table fits the terminal's width. Numbers never wrap and are never cut;
short text (names, statuses) does not wrap either; only columns marked ``long``
(descriptions, sources, prompt texts) may fold over several lines. The first layout
that fits wins:

1. flat: one line per row;
2. grouped: the first column (a model, say) becomes a heading line above its rows;
3. flat, then grouped, with the long columns folded;
4. vertical: one block per row, a ``header  value`` line per column.

Output that does not go to a terminal (piped, redirected) is never cut at 80 columns: the
table is printed at its full width, one line per row, unless COLUMNS says otherwise. For
programs, the commands that print a table of numbers take ``--json`` and ``--csv``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

WIDE = 100_000  # the "width" of a pipe: wide enough that no table wraps
_LONG_MIN = 16  # a folded long column keeps at least this many characters a line


@dataclass(frozen=True)
class Column:
    """A table column: ``numeric`` is right-aligned; ``long`` may fold on a narrow terminal."""

    header: str
    numeric: bool = False
    long: bool = False


def console(stderr: bool = False) -> Any:
    """A rich Console for stdout (or stderr): the terminal's width, COLUMNS, or no limit for a pipe."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if _is_terminal(stream) or os.environ.get("COLUMNS", "").strip().isdigit():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=WIDE)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _width(cell: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in cell.splitlines()), default=0)


def _needed(widths: Sequence[int]) -> int:
    """Characters a borderless table with these column widths takes (3 between columns)."""
    return sum(widths) + 3 * max(len(widths) - 1, 0)


def print_table(
    out: Any,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    caption: str | None = None,
    group: bool = False,
    styles: Sequence[str | None] | None = None,
) -> str:
    """Print ``rows`` (plain strings, never markup) on the rich console ``out``; return the layout used.

    ``group``: the first column may become heading lines (rows must be sorted by it).
    ``styles``: a rich style per row (or None). ``caption`` explains abbreviations; it is
    printed below the table as a paragraph.
    """
    from rich.text import Text

    styles = list(styles) if styles is not None else [None] * len(rows)
    natural = [max([_width(c.header), *(_width(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    folded = [min(n, max(_LONG_MIN, _width(c.header))) if c.long else n for n, c in zip(natural, columns, strict=True)]
    width = out.width
    grouped = group and len(columns) > 2
    if _needed(natural) <= width:
        layout = "flat"
    elif grouped and _needed(natural[1:]) <= width:
        layout = "grouped"
    elif _needed(folded) <= width:
        layout = "flat-folded"
    elif grouped and _needed(folded[1:]) <= width:
        layout = "grouped-folded"
    else:
        layout = "vertical"
    if layout == "vertical":
        _print_vertical(out, columns, rows, styles, title, group)
    elif layout.startswith("grouped"):
        _print_grouped(out, columns, rows, styles, title, natural, fold=layout.endswith("folded"))
    else:
        table = _table(columns, title, fold=layout.endswith("folded"))
        for row, style in zip(rows, styles, strict=True):
            table.add_row(*(Text(c) for c in row), style=style)
        out.print(table)
    if caption:
        out.print(Text(caption, style="dim"))
    return layout


def _table(columns: Sequence[Column], title: str | None, fold: bool, widths: Sequence[int] | None = None) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(title) if title else None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
    )
    for i, column in enumerate(columns):
        wraps = fold and column.long
        table.add_column(
            column.header,
            justify="right" if column.numeric else "left",
            no_wrap=not wraps,
            overflow="fold" if wraps else "ellipsis",
            width=None if widths is None else widths[i],
        )
    return table


def _print_grouped(
    out: Any,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    styles: Sequence[str | None],
    title: str | None,
    natural: Sequence[int],
    fold: bool,
) -> None:
    """The first column as heading lines; the other columns as tables of equal widths (one header)."""
    from rich.text import Text

    rest = list(columns[1:])
    widths = list(natural[1:])
    if fold:  # the long columns share what the others leave
        fixed = sum(w for w, c in zip(widths, rest, strict=True) if not c.long)
        long = [i for i, c in enumerate(rest) if c.long]
        spare = out.width - fixed - 3 * (len(rest) - 1)
        for i in long:
            widths[i] = max(min(natural[1 + i], spare // len(long)), _LONG_MIN, _width(rest[i].header))
    header = _table(rest, title, fold=False, widths=widths)
    out.print(header)
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and rows[end][0] == rows[start][0]:
            end += 1
        out.print(Text(rows[start][0], style="bold"))
        table = _table(rest, None, fold=fold, widths=widths)
        table.show_header = False
        for row, style in zip(rows[start:end], styles[start:end], strict=True):
            table.add_row(*(Text(c) for c in row[1:]), style=style)
        out.print(table)
        start = end


def _print_vertical(
    out: Any,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    styles: Sequence[str | None],
    title: str | None,
    group: bool,
) -> None:
    """One block per row: the first column(s) as a heading, then ``header  value`` lines."""
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    if title:
        out.print(Text(title, style="bold"))
    head = 2 if group and len(columns) > 2 and not columns[1].numeric else 1
    for row, style in zip(rows, styles, strict=True):
        out.print(Text(" x ".join(row[:head]), style=f"bold {style or ''}".strip()))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        for column, cell in zip(columns[head:], row[head:], strict=True):
            grid.add_row(Text(column.header), Text(cell, style=style or ""))
        out.print(Padding(grid, (0, 0, 0, 2), expand=False))


def fmt(value: Any, spec: str, missing: str = "-") -> str:
    """``format(value, spec)``, or ``missing`` for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def clean(value: Any) -> Any:
    """JSON-safe values: NaN and infinities become None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Indented JSON on stdout, NaN as null."""
    print(json.dumps(clean(value), indent=2, default=str))


def print_csv(fields: Sequence[str], records: Iterable[dict[str, Any]]) -> None:
    """CSV with a header line on stdout: one record a line, unformatted values, missing as empty."""
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _csv_value(v) for k, v in clean(record).items()})


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value
