"""``castillo sanitize OUT``: CASTILLO v1's original, degenerate and sanitized configs."""

from __future__ import annotations

import json

import click


@click.command("sanitize")
@click.argument("out", type=click.Path())
@click.option(
    "--detector",
    default="v1-length",
    show_default=True,
    help="v1-length (v1's rule on lengths) or a metric plugin's detector, e.g. repetition.",
)
@click.option("--to", "to", type=click.Path(), help="Where to write the views (default OUT/views/<detector>).")
@click.option("--cap", type=int, help="The cap (max_new_tokens) for rows that do not record one.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def command(out: str, detector: str, to: str | None, cap: int | None, as_json: bool) -> None:
    """Write v1's three views of OUT: original, degenerate (rows flagged) and sanitized."""
    from castillo_views.views import VIEWS, write_views

    summary = write_views(out, to, detector, cap)
    if as_json:
        click.echo(
            json.dumps(
                {"detector": summary.detector, "to": summary.to, "rows": summary.rows, "per_model": summary.per_model},
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # names come from the data: Text, never markup ("[/bold]" in a model id is not a tag)
    table = Table(title=Text(f"castillo sanitize {out} --detector {detector}"))
    table.add_column("model", overflow="fold")
    for name in VIEWS:
        table.add_column(name, justify="right")
    for model in sorted(summary.per_model):
        table.add_row(Text(model), *(str(summary.per_model[model][v]) for v in VIEWS))
    table.add_row("all", *(str(summary.rows[v]) for v in VIEWS), style="bold")
    console = Console()
    console.print(table)
    console.print(f"views written to {summary.to}/{{{','.join(VIEWS)}}}", markup=False)
