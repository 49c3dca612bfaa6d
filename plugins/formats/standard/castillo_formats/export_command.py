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
    help="hf: a Hugging Face dataset directory (config original, the default, plus sanitized-/degenerate-<detector>, "
    "responses; a card); castillo-v1: CASTILLO v1's preproc_<Dataset>_<split>_<model>.json files.",
)
@click.option(
    "--detector",
    "detectors",
    multiple=True,
    help="Degeneration detector of the derived views (v1-length, or a metric's, e.g. repetition); hf: repeatable, "
    "each gives configs sanitized-<detector> and degenerate-<detector>. Default: v1-length.",
)
@click.option(
    "--no-views", is_flag=True, help="hf only: export the original rows (and responses) without derived views."
)
@click.option("--cap", type=int, help="The cap (max_new_tokens) for rows that do not record one (v1's: 15000).")
@click.option(
    "--view",
    type=click.Choice(["original", "degenerate", "sanitized"]),
    default="original",
    show_default=True,
    help="castillo-v1 only: which view to write (v1 published the original rows).",
)
@click.option(
    "--license",
    "license_id",
    default="cc-by-4.0",
    show_default=True,
    help="hf only: the licence id of the measurements; the card lists each source corpus's licence beside it.",
)
@click.option(
    "--title",
    default="castillo: response-length distributions of LLMs",
    show_default=True,
    help="hf only: the card's title.",
)
@click.option(
    "--push-to-hub",
    "repo_id",
    metavar="ORG/NAME",
    help="hf only: upload DEST to this Hub dataset (created if needed; needs huggingface_hub and a token: HF_TOKEN "
    "or `hf auth login`).",
)
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repository private.")
@click.option("--force", is_flag=True, help="Write into a non-empty DEST, replacing an earlier export there.")
def command(
    out: str,
    dest: str,
    fmt: str,
    detectors: tuple[str, ...],
    no_views: bool,
    cap: int | None,
    view: str,
    license_id: str,
    title: str,
    repo_id: str | None,
    private: bool,
    force: bool,
) -> None:
    """Export OUT to DEST as a Hugging Face dataset (--format hf) or in v1's JSON layout."""
    if fmt == "hf":
        from castillo_formats.hf_export import export_hf, push_to_hub

        if no_views and detectors:
            raise click.UsageError("--no-views and --detector contradict each other; pass one of them")
        chosen = [] if no_views else list(detectors or ("v1-length",))
        summary = export_hf(
            out, dest, chosen, cap=cap, license_id=license_id, title=title, force=force, repo_id=repo_id
        )
        for config, rows in summary.rows.items():
            counts = ", ".join(f"{s} {n:,}" for s, n in rows.items() if n)
            click.echo(f"{config}: {counts or 'no rows (not written)'}")
        for warning in summary.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        click.echo(f"wrote {len(summary.files)} file(s) to {summary.dest} (card: {summary.dest}/README.md)")
        if repo_id:
            url = push_to_hub(summary.dest, repo_id, private=private)
            click.echo(f"pushed to the Hub dataset {repo_id}: {url}")
        return
    if repo_id or private or no_views:
        raise click.UsageError("--push-to-hub, --private and --no-views apply to --format hf only")
    if len(detectors) > 1:
        raise click.UsageError("--format castillo-v1 writes one view: pass one --detector")
    from castillo_formats.v1_export import export_v1

    detector = detectors[0] if detectors else "v1-length"
    summary_v1 = export_v1(out, dest, view=view, detector=detector, cap=cap, force=force)
    click.echo(f"wrote {summary_v1.rows:,} row(s) in {len(summary_v1.files)} v1 file(s) to {summary_v1.dest}")
