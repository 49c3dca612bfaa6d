"""``castillo export OUT --format hf|castillo-v1 DEST``: share a dataset in someone else's layout."""

from __future__ import annotations

import click

FORMATS = ("hf", "castillo-v1")


@click.command("export")
@click.argument("out", type=click.Path())
@click.argument("dest", type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="hf: a Hugging Face hub dataset directory (configs original/sanitized/degenerate, a card); "
    "castillo-v1: CASTILLO v1's preproc_<Dataset>_<split>_<model>.json files.",
)
@click.option(
    "--detector",
    default="v1-length",
    show_default=True,
    help="Degeneration detector of the views (v1-length, or a metric's, e.g. repetition).",
)
@click.option("--cap", type=int, help="The cap (max_new_tokens) for rows that do not record one (v1's: 15000).")
@click.option(
    "--view",
    type=click.Choice(["original", "degenerate", "sanitized"]),
    default="original",
    show_default=True,
    help="castillo-v1 only: which view to write (v1 published the original rows).",
)
@click.option("--license", "license_id", default="cc-by-4.0", show_default=True, help="hf only: the card's licence id.")
@click.option(
    "--title",
    default="castillo: response-length distributions of LLMs",
    show_default=True,
    help="hf only: the card's title.",
)
@click.option("--force", is_flag=True, help="Write into a non-empty DEST, replacing an earlier export there.")
def command(
    out: str,
    dest: str,
    fmt: str,
    detector: str,
    cap: int | None,
    view: str,
    license_id: str,
    title: str,
    force: bool,
) -> None:
    """Export OUT to DEST as a Hugging Face dataset (--format hf) or in v1's JSON layout."""
    if fmt == "hf":
        from castillo_formats.hf_export import SPLITS, export_hf

        summary = export_hf(out, dest, detector=detector, cap=cap, license_id=license_id, title=title, force=force)
        for config, rows in summary.rows.items():
            click.echo(f"{config}: " + ", ".join(f"{s} {rows[s]:,}" for s in SPLITS))
        click.echo(f"wrote {len(summary.files)} file(s) to {summary.dest} (card: {summary.dest}/README.md)")
        return
    from castillo_formats.v1_export import export_v1

    summary_v1 = export_v1(out, dest, view=view, detector=detector, cap=cap, force=force)
    click.echo(f"wrote {summary_v1.rows:,} row(s) in {len(summary_v1.files)} v1 file(s) to {summary_v1.dest}")
