"""``castillo rescore OUT``: compute metric columns over stored responses, with no model.

How a newly installed metric, or new options of one, reaches an existing dataset; and the
way forward when a resume is refused because the stored rows were scored differently.
"""

from __future__ import annotations

import json

import click

from castillo_core.cli import parse_metric_options


@click.command("rescore")
@click.argument("out", type=click.Path())
@click.option("--metric", "metrics", multiple=True, help="Metric to compute (default: every default metric).")
@click.option(
    "-M", "--metric-option", "metric_options", multiple=True, metavar="METRIC.KEY=VALUE", help="A metric's option."
)
@click.option("--drop", multiple=True, help="Remove a metric's columns from the stored rows; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def command(
    out: str, metrics: tuple[str, ...], metric_options: tuple[str, ...], drop: tuple[str, ...], as_json: bool
) -> None:
    """Compute (or recompute, or --drop) metric columns of every stored response of OUT; resumable."""
    from castillo_core.api.errors import StoreError
    from castillo_core.engine.metrics import probe, resolve
    from castillo_core.engine.rescore import rescore, settle_records
    from castillo_core.engine.store import Store
    from castillo_core.plugins import get_plugins

    store = Store(out)
    if not (store.root / "prompts").is_dir():
        raise StoreError(f"{out} is not a castillo output (no prompts/ table); pass the --out of a run or an import")
    options = parse_metric_options(metric_options)
    settings = resolve(get_plugins(), list(metrics) or None, options) if metrics or not drop else []
    probe(settings, max_new_tokens=64, n=2)
    with store.lock():
        for message in store.open().messages():
            click.echo(f"warning: {message}", err=True)
        summary = rescore(store.root, settings, drop=drop, store=store)
        settle_records(store, settings, drop, summary)
    result = {
        "out": summary.out,
        "metrics": [s.name for s in settings],
        "dropped": list(drop),
        "parts_rewritten": summary.parts,
        "parts_unchanged": summary.unchanged,
        "prompts": summary.prompts,
        "responses": summary.responses,
        "skipped": summary.skipped,
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    what = ", ".join([*(s.name for s in settings), *(f"-{d}" for d in drop)]) or "nothing"
    click.echo(
        f"rescored {summary.parts} part(s) ({summary.prompts:,} prompts, {summary.responses:,} responses) of "
        f"{summary.out} with {what}; {summary.unchanged} part(s) already up to date"
    )
    for reason in summary.skipped[:20]:
        click.echo(f"skipped {reason}", err=True)
