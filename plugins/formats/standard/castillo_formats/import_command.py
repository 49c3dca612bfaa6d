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
@click.argument("path", metavar="PATH|ORG/NAME")
@click.argument("out", type=click.Path())
@click.option(
    "--cap",
    type=int,
    default=15_000,
    show_default=True,
    help="v1's max_new_tokens; lengths >= cap-1 count as capped (n_length_capped).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "validate", "test", "all"]),
    default="all",
    show_default=True,
    help="From the Hub: the split(s) to download and import (a local PATH imports what it holds).",
)
@click.option("--revision", help="From the Hub: the dataset's commit, branch or tag (default: main).")
def castillo_v1(path: str, out: str, cap: int, split: str, revision: str | None) -> None:
    """Import v1's results: a local file or directory of preproc_<Dataset>_<split>_<model>.json, or a Hub
    dataset id (CASTILLO v1 is danfperam/castillo), downloaded lazily: only the splits asked for."""
    from castillo_formats.v1_hub import SPLITS, hub_files, hub_id
    from castillo_formats.v1_import import V1ImportError, import_files, import_v1

    hub = hub_id(path)
    if hub is None:
        if revision or split != "all":
            raise click.UsageError(f"--split and --revision apply to a Hub dataset id; {path} is a local path")
        summary = import_v1(path, out, cap=cap)
    else:
        if cap < 2:
            raise V1ImportError(f"--cap {cap}: the cap must be at least 2 tokens")
        repo, pinned = hub
        if revision and pinned and revision != pinned:
            raise click.UsageError(f"{path} pins revision {pinned} and --revision says {revision}; pass one")
        files, origin = hub_files(repo, revision or pinned, SPLITS if split == "all" else (split,))
        summary = import_files(files, origin, out, cap=cap)
    click.echo(
        f"imported {summary.written} row(s) from {summary.files} file(s) into {summary.out} "
        f"({summary.skipped} already present, {len(summary.cells or {})} cell(s))"
    )
