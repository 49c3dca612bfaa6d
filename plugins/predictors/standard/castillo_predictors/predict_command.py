"""``castillo predict fit|eval DATASET``: train and score response-length predictors.

The work lives in :mod:`castillo_predictors.evaluation`; this module parses options and prints
one table (each metric beside the per-(model, dataset) mean baseline).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import click

_TARGET = click.Choice(["mean", "p50", "p99", "max", "bucket"])


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``fit`` and ``eval`` share: which predictors, target and split."""
    options = [
        click.argument("dataset", type=click.Path()),
        click.option(
            "--predictor",
            "predictors",
            multiple=True,
            help="Predictor name (see `castillo list predictors`); repeat for several. Default: every available one.",
        ),
        click.option(
            "--target",
            type=_TARGET,
            default="mean",
            show_default=True,
            help="What is predicted per ⟨prompt, model⟩: the mean, p50, p99 or max length, or the bucket of the mean.",
        ),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the by-prompt 80/20 split."),
        click.option(
            "--test-share",
            type=float,
            default=0.2,
            show_default=True,
            help="Share of each dataset's prompts held out, where the dataset has one split of its own.",
        ),
        click.option(
            "-P",
            "--predictor-option",
            "predictor_options",
            multiple=True,
            metavar="PREDICTOR.KEY=VALUE",
            help="An option of one predictor, e.g. tfidf-ridge.alpha=3; repeatable.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group("predict")
def command() -> None:
    """Train and evaluate response-length predictors on a castillo dataset."""


@command.command("fit")
@_common
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to save the fitted predictors.")
@click.option("--all-rows", is_flag=True, help="Train on every row, not only the train side of the split.")
def fit(
    dataset: str,
    predictors: tuple[str, ...],
    target: str,
    split_seed: int,
    test_share: float,
    predictor_options: tuple[str, ...],
    as_json: bool,
    out: str,
    all_rows: bool,
) -> None:
    """Fit predictors on the train side of DATASET's split and save them (a pickle) to --out."""
    from castillo_predictors.evaluation import SplitSpec, fit_to_file, parse_predictor_options

    summary = fit_to_file(
        dataset,
        out,
        predictors,
        target,
        SplitSpec(split_seed, test_share),
        parse_predictor_options(predictor_options),
        all_rows,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for note in summary["notes"]:
        click.echo(note, err=True)
    click.echo(
        f"fitted {', '.join(summary['predictors'])} on {summary['n_train']} row(s) ({summary['trained_on']}) "
        f"for target {target}; saved to {out}"
    )


@command.command("eval")
@_common
@click.option(
    "--fitted",
    type=click.Path(dir_okay=False),
    help="Evaluate predictors saved by `castillo predict fit` (their target and split apply).",
)
@click.option("--all-rows", is_flag=True, help="Score every row (for a dataset the --fitted predictors never saw).")
@click.option(
    "--by",
    type=click.Choice(["model", "dataset", "none"]),
    default="model",
    show_default=True,
    help="Break the metrics down per model or per dataset, beside the overall row.",
)
@click.option("--bucket-edges", help="Comma-separated bucket edges in tokens (default 64,128,256,512,1024,2048).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the results as JSON to this file.")
def eval_(
    dataset: str,
    predictors: tuple[str, ...],
    target: str,
    split_seed: int,
    test_share: float,
    predictor_options: tuple[str, ...],
    as_json: bool,
    fitted: str | None,
    all_rows: bool,
    by: str,
    bucket_edges: str | None,
    out: str | None,
) -> None:
    """Fit on the train side of DATASET (or load --fitted) and score on its held-out prompts."""
    from castillo_core import ConfigError
    from castillo_predictors.evaluation import DEFAULT_BUCKET_EDGES, SplitSpec, evaluate, parse_predictor_options

    edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    if bucket_edges:
        try:
            edges = tuple(sorted(float(e) for e in bucket_edges.split(",") if e.strip()))
        except ValueError:
            raise ConfigError(f"--bucket-edges {bucket_edges!r}: expected numbers separated by commas") from None
    evaluation = evaluate(
        dataset,
        predictors,
        target,
        SplitSpec(split_seed, test_share),
        by,
        parse_predictor_options(predictor_options),
        fitted,
        all_rows,
        edges,
    )
    payload = json.dumps(evaluation.as_dict(), indent=2, default=_json_default)
    if out:
        from pathlib import Path

        Path(out).write_text(payload + "\n")
    if as_json:
        click.echo(payload)
        return
    _print_table(evaluation)


eval_.name = "eval"


def _json_default(value: Any) -> Any:
    return str(value)


def _fmt(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric in ("mae", "rmse"):
        return f"{value:.1f}"
    if metric in ("acc50", "acc100", "bucket_acc"):
        return f"{100 * value:.1f}%"
    return f"{value:.3f}"


def _print_table(evaluation: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from castillo_predictors.evaluation import BASELINE, METRIC_LABELS, METRICS

    console = Console()
    for note in evaluation.notes:
        console.print(note, style="yellow", markup=False)
    table = Table(
        title=f"castillo predict eval {evaluation.dataset} --target {evaluation.target}",
        caption="baseline: the per-(model, dataset) training mean; Acc-N: share within N tokens; "
        "Bucket: share in the right length bucket; tau: Kendall's tau-b of predicted against true order",
    )
    table.add_column("scope", overflow="fold")
    table.add_column("predictor")
    table.add_column("n", justify="right")
    for metric in METRICS:
        table.add_column(METRIC_LABELS[metric], justify="right")
    scopes = list(dict.fromkeys(r["scope"] for r in evaluation.results))
    for scope in scopes:
        rows = [r for r in evaluation.results if r["scope"] == scope]
        style = "bold" if scope == "all" else None
        first = rows[0]
        table.add_row(
            scope, BASELINE, str(first["n"]), *(_fmt(m, first[f"{m}_baseline"]) for m in METRICS), style="dim"
        )
        for row in rows:
            table.add_row("", row["predictor"], str(row["n"]), *(_fmt(m, row[m]) for m in METRICS), style=style)
        if scope != scopes[-1]:
            table.add_section()
    console.print(table)
    console.print(
        f"train rows {evaluation.n_train}, test rows {evaluation.n_test}; split {evaluation.split}", markup=False
    )
    best = evaluation.best()
    if best is not None:
        row = evaluation.overall(best)
        key = "bucket_acc" if evaluation.target == "bucket" else "mae"
        console.print(
            f"best: {best} ({METRIC_LABELS[key]} {_fmt(key, row[key])} against the baseline's "
            f"{_fmt(key, row[f'{key}_baseline'])})",
            markup=False,
        )
