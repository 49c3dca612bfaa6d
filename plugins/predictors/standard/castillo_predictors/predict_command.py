"""``castillo predict fit|eval DATASET``: train and score response-length predictors.

The work lives in :mod:`castillo_predictors.evaluation`; this module parses options and prints
one table (each metric beside the per-(model, dataset) mean baseline), or ``--json``/``--csv``.

Tables follow castillo's terminal rule (docs/cli.md): they fit the terminal (numbers and
predictor names are never cut; each scope is a heading line above its rows), and output
that does not go to a terminal is printed at full width unless COLUMNS is set.
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
        click.option(
            "--csv", "as_csv", is_flag=True, help="The results as CSV (eval: one row per scope and predictor)."
        ),
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
    as_csv: bool,
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
    if as_csv:
        _print_csv(
            ["predictor", "target", "n_train", "trained_on", "out"],
            [
                {
                    "predictor": p,
                    "target": target,
                    "n_train": summary["n_train"],
                    "trained_on": summary["trained_on"],
                    "out": out,
                }
                for p in summary["predictors"]
            ],
        )
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
    as_csv: bool,
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
    if as_csv:
        _print_csv(_EVAL_FIELDS, _eval_records(evaluation))
        return
    _print_table(evaluation)


eval_.name = "eval"


def _json_default(value: Any) -> Any:
    return str(value)


def _fmt(metric: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric in ("mae", "rmse"):
        return f"{value:,.1f}"
    if metric in ("acc50", "acc100", "bucket_acc"):
        return f"{100 * value:.1f}%"
    return f"{value:.3f}"


def _metrics() -> tuple[str, ...]:
    from castillo_predictors.evaluation import METRICS

    return tuple(METRICS)


_EVAL_FIELDS = (
    "scope",
    "predictor",
    "n",
    "mae",
    "rmse",
    "r2",
    "acc50",
    "acc100",
    "bucket_acc",
    "tau",
)


def _eval_records(evaluation: Any) -> list[dict[str, Any]]:
    """One record per scope and predictor, the baseline first in each scope (as the table shows them)."""
    from castillo_predictors.evaluation import BASELINE

    records = []
    for scope in dict.fromkeys(r["scope"] for r in evaluation.results):
        rows = [r for r in evaluation.results if r["scope"] == scope]
        base = {"scope": scope, "predictor": BASELINE, "n": rows[0]["n"]}
        records.append(base | {m: rows[0][f"{m}_baseline"] for m in _metrics()})
        records += [
            {"scope": scope, "predictor": r["predictor"], "n": r["n"]} | {m: r[m] for m in _metrics()} for r in rows
        ]
    return records


def _print_table(evaluation: Any) -> None:
    from castillo_predictors.evaluation import BASELINE, METRIC_LABELS

    console = _console()
    for note in evaluation.notes:
        console.print(note, style="yellow", markup=False, highlight=False)
    best = evaluation.best()
    headers = ["predictor", *(METRIC_LABELS[m] for m in _metrics())]
    groups = []
    for scope in dict.fromkeys(r["scope"] for r in evaluation.results):
        rows = [r for r in evaluation.results if r["scope"] == scope]
        cells = [[BASELINE, *(_fmt(m, rows[0][f"{m}_baseline"]) for m in _metrics())]]
        styles: list[str | None] = ["dim"]
        for row in rows:
            cells.append([row["predictor"], *(_fmt(m, row[m]) for m in _metrics())])
            styles.append("bold" if scope == "all" and row["predictor"] == best else None)
        what = "all models and datasets" if scope == "all" else scope
        groups.append((f"{what}: {rows[0]['n']:,} test rows", cells, styles))
    print_groups(
        console,
        f"castillo predict eval {evaluation.dataset} --target {evaluation.target}",
        headers,
        groups,
        "baseline: the per-(model, dataset) training mean; MAE, RMSE: tokens; Acc-N: share within N tokens; "
        "Bucket: share in the right length bucket; tau: Kendall's tau-b of predicted against true order",
    )
    console.print(
        f"train rows {evaluation.n_train}, test rows {evaluation.n_test}; split {evaluation.split}",
        markup=False,
        highlight=False,
    )
    if best is not None:
        row = evaluation.overall(best)
        key = "bucket_acc" if evaluation.target == "bucket" else "mae"
        console.print(
            f"best: {best} ({METRIC_LABELS[key]} {_fmt(key, row[key])} against the baseline's "
            f"{_fmt(key, row[f'{key}_baseline'])})",
            markup=False,
            highlight=False,
        )


# -- terminal output (castillo's table rule; plugins use only castillo's public API) --------------


def _console() -> Any:
    """A rich Console for stdout: the terminal's width, COLUMNS, or no limit when piped."""
    import os
    import sys

    from rich.console import Console

    try:
        terminal = sys.stdout.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return Console()
    return Console(width=100_000)


def _print_csv(fields: Any, records: list[dict[str, Any]]) -> None:
    """CSV with a header line on stdout; NaN and None as empty fields."""
    import csv
    import sys

    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(
            {k: "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for k, v in record.items()}
        )


def print_groups(
    console: Any,
    title: str,
    headers: list[str],
    groups: list[tuple[str | None, list[list[str]], list[str | None]]],
    caption: str | None = None,
) -> None:
    """Tables of one text column then numbers, one per group under a heading line, all aligned.

    The header prints once; numbers never wrap. When the terminal is too narrow for the
    names, the first column folds; narrower still, each row becomes ``name: HEADER value, ...``.
    """
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    rows = [row for _, cells, _ in groups for row in cells]
    widths = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    spare = console.width - sum(widths[1:]) - 3 * (len(widths) - 1)
    if spare < 8:
        console.print(Text(title, style="bold"))
        for heading, cells, styles in groups:
            if heading:
                console.print(Text(heading, style="bold"))
            for row, style in zip(cells, styles, strict=True):
                pairs = ", ".join(f"{h} {v}" for h, v in zip(headers[1:], row[1:], strict=True))
                console.print(Text(f"  {row[0]}: {pairs}", style=style or ""))
    else:
        widths[0] = min(widths[0], spare)

        def table(header: bool, table_title: str | None) -> Any:
            t = Table(
                title=Text(table_title) if table_title else None,
                box=box.SIMPLE_HEAD,
                show_edge=False,
                pad_edge=False,
                show_header=header,
                header_style="bold",
            )
            for i, h in enumerate(headers):
                t.add_column(
                    h,
                    width=widths[i],
                    justify="left" if i == 0 else "right",
                    no_wrap=i > 0,
                    overflow="fold",
                )
            return t

        console.print(table(True, title))
        for heading, cells, styles in groups:
            if heading:
                console.print(Text(heading, style="bold"))
            t = table(False, None)
            for row, style in zip(cells, styles, strict=True):
                t.add_row(*(Text(c) for c in row), style=style)
            console.print(t)
    if caption:
        console.print(Text(caption, style="dim"))
