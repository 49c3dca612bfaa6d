"""``castillo compare RUN_A RUN_B``: did the lengths change between two runs, and where?"""

from __future__ import annotations

import click


@click.command("compare")
@click.argument("run_a", type=click.Path())
@click.argument("run_b", type=click.Path())
@click.option(
    "--by",
    type=click.Choice(["auto", "cell", "dataset"]),
    default="auto",
    show_default=True,
    help="Match (model, dataset) cells, or datasets across the two runs' models; auto: cells when the runs "
    "share a model, datasets when each holds one model.",
)
@click.option("--model-a", help="Compare only this model of RUN_A.")
@click.option("--model-b", help="Compare only this model of RUN_B.")
@click.option("--dataset", "datasets", multiple=True, help="Compare only this dataset (repeatable).")
@click.option(
    "--top", type=click.IntRange(min=0), default=5, show_default=True, help="Prompts that moved most per cell."
)
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True, help="Bootstrap resamples.")
@click.option(
    "--confidence",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence level of the intervals.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--label-a", help="Name of RUN_A in the output (default: its directory name).")
@click.option("--label-b", help="Name of RUN_B in the output (default: its directory name).")
@click.option("--json", "as_json", is_flag=True, help="Print the complete comparison as JSON instead of tables.")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Also write DIR/compare.html, DIR/compare.md and DIR/compare.json (a report section).",
)
def command(
    run_a: str,
    run_b: str,
    by: str,
    model_a: str | None,
    model_b: str | None,
    datasets: tuple[str, ...],
    top: int,
    resamples: int,
    confidence: float,
    seed: int,
    label_a: str | None,
    label_b: str | None,
    as_json: bool,
    html_dir: str | None,
) -> None:
    """Compare the length distributions of two castillo outputs (two models, versions or settings).

    Per cell: the change in mean length, CV and capped share (B - A) with paired bootstrap
    confidence intervals over the matched prompts; per prompt: the Wasserstein-1 distance and
    KS statistic between the two length distributions, and the prompts that moved most.

    \b
    Examples:
      castillo compare runs/base runs/finetuned
      castillo compare runs/llama runs/qwen --by dataset --json > diff.json
      castillo compare runs/t07 runs/t10 --html runs/t10/report
    """
    import json
    from pathlib import Path

    from castillo_compare.bootstrap import Settings
    from castillo_compare.compare import compare_runs
    from castillo_compare.render import print_terminal, to_html, to_markdown

    result = compare_runs(
        run_a,
        run_b,
        by=by,
        model_a=model_a,
        model_b=model_b,
        datasets=datasets,
        label_a=label_a,
        label_b=label_b,
        settings=Settings(resamples=resamples, confidence=confidence, seed=seed),
        top=top,
    )
    document = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False)
    if as_json:
        click.echo(document)
    else:
        print_terminal(result)
    if html_dir is not None:
        out = Path(html_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.html").write_text(to_html(result), encoding="utf-8")
        (out / "compare.md").write_text(to_markdown(result), encoding="utf-8")
        (out / "compare.json").write_text(document + "\n", encoding="utf-8")
        from rich.console import Console
        from rich.text import Text

        Console(stderr=as_json).print(Text(f"wrote {out / 'compare.html'}, compare.md and compare.json"))
