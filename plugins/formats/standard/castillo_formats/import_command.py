"""``castillo import castillo-v1 PATH OUT``: bring CASTILLO v1's published results in.

A group, so that other sources (``castillo import <format> ...``) can sit beside v1's
later without a new top-level command each.
"""

from __future__ import annotations

import click


@click.group("import")
def command() -> None:
    """Import published results from other formats into a castillo output."""


@command.command("castillo-v1")
@click.argument("path", type=click.Path())
@click.argument("out", type=click.Path())
@click.option(
    "--cap",
    type=int,
    default=15_000,
    show_default=True,
    help="v1's max_new_tokens; lengths >= cap-1 count as capped (n_length_capped).",
)
def castillo_v1(path: str, out: str, cap: int) -> None:
    """Read v1's JSON files (a file, or a directory of preproc_<Dataset>_<split>_<model>.json)."""
    from castillo_formats.v1_import import import_v1

    summary = import_v1(path, out, cap=cap)
    click.echo(
        f"imported {summary.written} row(s) from {summary.files} file(s) into {summary.out} "
        f"({summary.skipped} already present, {len(summary.cells or {})} cell(s))"
    )
