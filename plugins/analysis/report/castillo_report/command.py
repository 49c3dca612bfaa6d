"""``castillo report OUT [--to DIR]``: pictures of a run's length distributions."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("out", type=click.Path())
@click.option("--to", "to", type=click.Path(), help="Where to write the report (default OUT/report).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(out: str, to: str | None, quiet: bool) -> None:
    """Write a static HTML page, a Markdown summary and PNG plots of OUT (no server needed)."""
    from castillo_report.report import build_report

    result = build_report(out, to, progress=not quiet)
    click.echo(
        f"report of {result.rows:,} prompt rows ({result.cells} model x dataset cells) written to "
        f"{result.to}/index.html (also report.md, summary.json) in {result.seconds:.1f} s"
    )
