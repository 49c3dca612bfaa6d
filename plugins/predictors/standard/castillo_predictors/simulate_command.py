"""``castillo simulate DATASET``: FCFS against shortest-predicted-first against the oracle.

The model and its assumptions are in :mod:`castillo_predictors.simulate` and docs/predictors.md.
"""

from __future__ import annotations

import json
import math

import click


@click.command("simulate")
@click.argument("dataset", type=click.Path())
@click.option(
    "--predictor",
    "predictors",
    multiple=True,
    help="Predictor for shortest-predicted-first; repeat for several. Default: every available one.",
)
@click.option("--arrival-rate", type=float, help="Poisson arrival rate, jobs/s (default: from --load).")
@click.option(
    "--load",
    type=float,
    default=0.9,
    show_default=True,
    help="Offered load (share of capacity) that sets the arrival rate when --arrival-rate is not given.",
)
@click.option("--slots", type=int, default=8, show_default=True, help="Batch slots decoding at once.")
@click.option("--tokens-per-second", type=float, default=50.0, show_default=True, help="Decode speed of one slot.")
@click.option("--jobs", "n_jobs", type=int, default=5000, show_default=True, help="Jobs to simulate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of job draws and arrivals.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the by-prompt 80/20 split.")
@click.option("--test-share", type=float, default=0.2, show_default=True, help="Share of prompts held out.")
@click.option("--fitted", type=click.Path(dir_okay=False), help="Use predictors saved by `castillo predict fit`.")
@click.option(
    "-P",
    "--predictor-option",
    "predictor_options",
    multiple=True,
    metavar="PREDICTOR.KEY=VALUE",
    help="An option of one predictor, e.g. tfidf-ridge.alpha=3; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per policy, numbers unrounded.")
def command(
    dataset: str,
    predictors: tuple[str, ...],
    arrival_rate: float | None,
    load: float,
    slots: int,
    tokens_per_second: float,
    n_jobs: int,
    seed: int,
    split_seed: int,
    test_share: float,
    fitted: str | None,
    predictor_options: tuple[str, ...],
    as_json: bool,
    as_csv: bool,
) -> None:
    """Simulate one serving queue fed with DATASET's held-out prompts and their true lengths."""
    from castillo_predictors.evaluation import parse_predictor_options
    from castillo_predictors.simulate import QueueConfig, simulate

    result = simulate(
        dataset,
        predictors,
        QueueConfig(slots, tokens_per_second, arrival_rate, load),
        n_jobs,
        seed,
        split_seed,
        test_share,
        parse_predictor_options(predictor_options),
        fitted,
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    from castillo_predictors.predict_command import _console, _print_csv, print_groups

    if as_csv:
        records = [{"policy": name, **r} for name, r in result.policies.items()]
        fields = ["policy", *dict.fromkeys(k for r in result.policies.values() for k in r)]
        _print_csv(fields, records)
        return
    console = _console()
    for note in result.notes:
        console.print(note, style="yellow", markup=False, highlight=False)
    rows = [
        [
            name,
            f"{r['mean_jct']:.2f}",
            f"{r['p50_jct']:.2f}",
            f"{r['p99_jct']:.2f}",
            f"{r['throughput_jobs']:.3f}",
            f"{r['throughput_tokens']:,.0f}",
            f"{-100 * r['gain_vs_fcfs']:+.1f}%",
            "-" if math.isnan(r["recovered"]) else f"{100 * r['recovered']:.0f}%",
        ]
        for name, r in result.policies.items()
    ]
    print_groups(
        console,
        f"castillo simulate {dataset}",
        ["policy", "mean", "p50", "p99", "jobs/s", "tok/s", "vs FCFS", "recovered"],
        [(None, rows, [None] * len(rows))],
        "mean, p50, p99: job completion time (JCT, s); spf:NAME: shortest predicted first; "
        "recovered: share of the oracle's mean-JCT gain over FCFS",
    )
    console.print(
        f"{result.n_jobs} jobs, {result.slots} slots x {result.tokens_per_second:g} tokens/s, arrival rate "
        f"{result.arrival_rate:.4g} jobs/s (offered load {result.offered_load:.2f}), seed {result.seed}",
        markup=False,
        highlight=False,
    )
