"""``castillo report``: a static HTML page and a Markdown summary of a castillo output.

The page answers "how long, how variable, how often degenerate or capped" per model x
dataset at a glance (the figures of the CASTILLO paper, for any run or imported v1 data),
then shows the distributions behind those means and where the numbers came from. It is a
folder of files (``index.html``, ``report.md``, ``summary.json`` and PNGs): no server,
no network, no script, so it can be opened from disk, archived with the data, or
attached to an issue.

The work is split so that the slow part is bounded: :mod:`castillo_report.data` reads
only the columns it needs and aggregates with numpy (the sanitized view's numbers from
:mod:`castillo_report.sanitized`); :mod:`castillo_report.figures` picks a fixed number of
figures for the grid's shape, whatever the row count, and :mod:`castillo_report.plots`
draws them (box statistics are precomputed, scatter plots subsample); the few example texts
(:mod:`castillo_report.examples`) are read in a thread meanwhile; :mod:`castillo_report.render`
writes the pages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from castillo_core import CastilloError

__all__ = ["ReportError", "ReportResult", "build_report"]


class ReportError(CastilloError):
    """A report that cannot be built (no such output, no rows, a --to that is a file)."""


@dataclass
class ReportResult:
    """Where the report went and what it took."""

    to: Path
    rows: int
    cells: int
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class _Steps:
    """What a step callback of :func:`_progress` is: ``step(label)``, and ``step.total(n)`` once the count is known."""

    def __init__(self, advance: Callable[[str], None], total: Callable[[int], None]) -> None:
        self._advance, self.total = advance, total

    def __call__(self, label: str) -> None:
        self._advance(label)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[_Steps]:
    """A rich progress bar on stderr (one tick per step), or a silent stand-in."""
    if not enabled:
        yield _Steps(lambda label: None, lambda count: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]report[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("reading", total=total)
        first = [True]
        size = [total]

        def step(label: str) -> None:
            if not first[0]:
                bar.advance(task)
            first[0] = False
            bar.update(task, description=label)

        def set_total(count: int) -> None:
            size[0] = count
            bar.update(task, total=count)

        yield _Steps(step, set_total)
        bar.update(task, completed=size[0])


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    mark = time.perf_counter()
    return function(*args), time.perf_counter() - mark


def build_report(out: str | Path, to: str | Path | None = None, progress: bool = True) -> ReportResult:
    """Write the report of the castillo output ``out`` into ``to`` (default ``OUT/report``)."""
    from castillo_views.provenance import read_manifest_dict, read_part_metadata

    from castillo_core import __version__, detectors, read_schema, read_table
    from castillo_report import data as report_data
    from castillo_report import figures as report_figures
    from castillo_report import render
    from castillo_report.examples import read_examples

    source = Path(out)
    if not (source / "prompts").is_dir():
        hint = "it does not exist" if not source.exists() else "it has no prompts/ table"
        raise ReportError(f"{source} is not a castillo output ({hint}); pass the --out of a run or an import")
    target = Path(to) if to is not None else source / "report"
    if target.exists() and not target.is_dir():
        raise ReportError(f"--to {target} is a file; pass a directory")
    report_figures.require_matplotlib()  # before any work: one line saying what to install
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _progress(progress, 3) as step, ThreadPoolExecutor(max_workers=1) as pool:
        step("reading prompts")
        mark = time.perf_counter()
        declared = detectors(read_schema(source, "prompts"), "flag_count")
        table = read_table(source, "prompts", columns=[*report_data.COLUMNS, *declared.values()])
        if table.num_rows == 0:
            raise ReportError(f"{source} holds no prompts rows yet; run or import something first")
        manifest = read_manifest_dict(source)
        metadata = read_part_metadata(source)
        timings["read"] = time.perf_counter() - mark
        step("statistics")
        mark = time.perf_counter()
        data = report_data.compute(table, str(source), manifest, metadata, declared=declared)
        del table
        timings["statistics"] = time.perf_counter() - mark
        # the few example texts are read while the figures are drawn (pyarrow releases the GIL)
        examples = pool.submit(_timed, read_examples, source, data.example_picks)
        jobs = report_figures.plan(data)
        step.total(3 + len(jobs))
        target.mkdir(parents=True, exist_ok=True)
        mark = time.perf_counter()
        figures = report_figures.draw_all(jobs, target, step)
        timings["plots"] = time.perf_counter() - mark
        step("pages")
        mark = time.perf_counter()
        data.examples, timings["examples"] = examples.result()
        generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
        render.write_json(target / "summary.json", render.summary(data, figures, __version__, generated))
        render.write_html(target / "index.html", data, figures, __version__, generated)
        render.write_markdown(target / "report.md", data, figures, __version__, generated)
        timings["pages"] = time.perf_counter() - mark
    files = ["index.html", "report.md", "summary.json", *(f.file for f in figures)]
    return ReportResult(
        to=target,
        rows=data.rows,
        cells=len(data.cells),
        files=files,
        seconds=time.perf_counter() - started,
        timings=timings,
    )
