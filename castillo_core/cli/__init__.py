"""The ``castillo`` command.

Commands stay thin: they parse options into a run spec or a query and hand it to the
engine or the dataset reader. Plugins add their own commands through the
``castillo_register_commands`` hook. User errors (:class:`CastilloError`) print one
clear message and exit 2 (130 when interrupted); ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from castillo_core import __version__
from castillo_core.api.errors import CastilloError, ConfigError


def _parse_kv(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """KEY=VALUE pairs; values are read as JSON when they parse (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def parse_metric_options(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``-M METRIC.KEY=VALUE`` pairs, by metric (checked against each metric's Options later)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in _parse_kv(values, "--metric-option").items():
        metric, _, option = key.partition(".")
        if not option:
            raise ConfigError(f"--metric-option {key}={value}: expected METRIC.KEY=VALUE")
        out.setdefault(metric, {})[option] = value
    return out


class _Option(click.Option):
    """An option whose ``show_default`` text is shown as written (click puts it in parentheses)."""

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


class _Group(click.Group):
    """A group that turns CastilloError into a one-line message and a clean exit."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except CastilloError as exc:
            if debug:
                raise
            from castillo_core.api.redact import redact

            click.secho(f"error: {redact(str(exc))}", fg="red", err=True)
            if getattr(exc, "exit_code", 2) in {130, 143}:
                click.echo("re-run the same command to resume", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            click.secho("interrupted: re-run the same command to resume", fg="yellow", err=True)
            ctx.exit(130)


_EXAMPLES = """\b
Examples:
  castillo run --backend fake --corpus tiny --out runs/try   # no model
  castillo run --backend llamacpp --model smollm2-135m \\
      --corpus humaneval --limit 20 -n 10 --out runs/demo
  castillo run --preset castillo-v1 --backend vllm --dry-run
  castillo show runs/demo              # lengths per model x dataset
  castillo show runs/demo --csv > lengths.csv
  castillo prompts --corpus humaneval --limit 3
  castillo list backends

Every command takes -h; docs/cli.md has the details.
"""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EXAMPLES)
@click.version_option(__version__, prog_name="castillo")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def cli(debug: bool) -> None:
    """castillo: measure the response-length distributions of LLMs."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="A TOML grid file.")
@click.option("--preset", help="Start from a named preset (see `castillo list presets`), e.g. castillo-v1.")
@click.option("--backend", help="Inference backend (see `castillo list backends`).")
@click.option("--model", "models", multiple=True, help="Model id, path or alias; repeat for several.")
@click.option("--revision", help="Model revision (commit, tag or branch).")
@click.option("--dtype", help="Model dtype (auto, bf16, fp16, fp32), where the backend takes one.")
@click.option(
    "-B",
    "--backend-option",
    "backend_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A backend option, e.g. n_ctx=4096; repeatable.",
)
@click.option("--corpus", "corpora", multiple=True, help="Corpus name; repeat for several.")
@click.option("--source", help="Corpus source: a local file or directory (default: the corpus's own).")
@click.option("--split", help="Corpus split (train, validate, test, full, ...).")
@click.option("--limit", type=int, help="Use the first LIMIT prompts of the selection.")
@click.option("--sample-seed", type=int, help="Seed of the corpus's prompt sampling (default 42).")
@click.option(
    "-C", "--corpus-option", "corpus_options", multiple=True, metavar="KEY=VALUE", help="A corpus option; repeatable."
)
@click.option("-n", "--n", "n", type=int, cls=_Option, show_default="10", help="Completions per prompt.")
@click.option(
    "--temperature",
    type=float,
    cls=_Option,
    show_default="1.0; the model's own with --model-defaults",
    help="Sampling temperature (0 is greedy).",
)
@click.option(
    "--top-p",
    type=float,
    cls=_Option,
    show_default="off (1.0); the model's own with --model-defaults",
    help="Nucleus sampling: keep the smallest set of tokens whose probabilities sum to P.",
)
@click.option(
    "--top-k",
    type=int,
    cls=_Option,
    show_default="off (0); the model's own with --model-defaults",
    help="Keep only the K most likely tokens.",
)
@click.option(
    "--min-p",
    type=float,
    cls=_Option,
    show_default="off (0.0); the model's own with --model-defaults",
    help="Drop tokens less likely than P times the most likely one.",
)
@click.option(
    "--repetition-penalty",
    type=float,
    cls=_Option,
    show_default="off (1.0); the model's own with --model-defaults",
    help="Penalty on tokens already generated (above 1 discourages repeats).",
)
@click.option(
    "--max-new-tokens", type=int, cls=_Option, show_default="1024", help="Cap on generated tokens per completion."
)
@click.option(
    "--max-prompt-tokens", type=int, cls=_Option, show_default="2500", help="Longer prompts are truncated and flagged."
)
@click.option(
    "--truncation",
    type=click.Choice(["template", "v1"]),
    cls=_Option,
    show_default="template",
    help="How prompts over --max-prompt-tokens are cut: template (the templated prompt, cutting the question "
    "from its end) or v1 (the raw text to the cap in the model's tokenizer, then templated; CASTILLO v1's).",
)
@click.option(
    "--counting",
    type=click.Choice(["exact", "v1"]),
    cls=_Option,
    show_default="exact",
    help="exact: generated ids up to and including the stop token; v1: one more when the model stops on an "
    "end id other than its tokenizer's eos_token, as CASTILLO v1 counted.",
)
@click.option(
    "--seed",
    type=int,
    cls=_Option,
    show_default="0",
    help="Run seed; each prompt's seed derives from it and the prompt id.",
)
@click.option(
    "--model-defaults",
    is_flag=True,
    default=None,
    cls=_Option,
    show_default="off",
    help="Use the model's own generation config with sampling on (CASTILLO v1's setting); "
    "sampling flags given beside it still override.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Metric to apply; repeatable (default: the installed metrics that run by default; castillo list metrics).",
)
@click.option("--no-metrics", is_flag=True, help="Apply no metric plugins.")
@click.option(
    "-M",
    "--metric-option",
    "metric_options",
    multiple=True,
    metavar="METRIC.KEY=VALUE",
    help="An option of one metric, e.g. degeneration.max_compression=0.2; repeatable.",
)
@click.option("--out", help="Output directory (default runs/castillo). Re-running resumes.")
@click.option("--no-text", is_flag=True, help="Do not keep response texts in the responses table.")
@click.option("--strict", is_flag=True, help="Fail when a corpus rejects any record.")
@click.option("--quiet", is_flag=True, help="No live display; warnings only.")
@click.option(
    "--log-json", is_flag=True, help="Progress, messages and errors as JSON lines on stderr, nothing else (batch jobs)."
)
@click.option(
    "--flush-every",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Write a part every this many responses (and at least every 30 s).",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where cells run: local, or a cluster executor plugin such as ray (see `castillo list executors`).",
)
@click.option(
    "-E",
    "--executor-option",
    "executor_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the executor, e.g. shard_size=50; repeatable.",
)
@click.option(
    "--ray-address",
    help="Cluster executors: the cluster, e.g. auto, HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS).",
)
@click.option("--shard-size", type=int, help="Cluster executors: split cells into tasks of at most this many prompts.")
@click.option("--max-retries", type=int, help="Cluster executors: retry a failed task this many times (default 2).")
@click.option(
    "-R",
    "--task-resource",
    "task_resources",
    multiple=True,
    metavar="KEY=VALUE",
    help="Cluster executors: a resource each task asks for, e.g. num_gpus=1, num_cpus=4, memory=16e9; repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Show the plan and its cost; load no model, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan (--dry-run) or the final length table as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the plan (--dry-run) or the final length table as CSV.")
@click.option("--estimate-from", type=click.Path(), help="A dataset whose mean lengths estimate the cost.")
@click.option("--tokens-per-second", type=float, help="Throughput for the time estimate of --dry-run.")
@click.option("--probe", is_flag=True, help="With --dry-run: measure tokens/s on the real backend first.")
@click.pass_context
def run(ctx: click.Context, **opts: Any) -> None:
    """Sample N completions per prompt for a grid of models x corpora and store them."""
    from castillo_core.cli.run import execute

    execute(opts, argv=sys.argv)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Installed plugins: where each came from, what it provides, why it failed."""
    from castillo_core.cli.info import show_plugins

    show_plugins(as_json)


@cli.command("list")
@click.argument(
    "kind", type=click.Choice(["backends", "corpora", "metrics", "presets", "predictors", "executors", "views"])
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(kind: str, as_json: bool) -> None:
    """List backends, corpora, metrics, presets, predictors or executors."""
    from castillo_core.cli.info import show_list

    show_list(kind, as_json)


@cli.command()
@click.argument("out", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model x dataset, numbers unrounded.")
@click.option("--csv", "as_csv", is_flag=True, help="The same rows as CSV with a header line.")
def show(out: str, as_json: bool, as_csv: bool) -> None:
    """Per model x dataset: prompts, mean length, mean std, CV and share capped."""
    from castillo_core.cli.info import show_summary

    show_summary(out, as_json, as_csv)


def _add_core_commands() -> None:
    """The core's own commands beyond run/plugins/list/show (each imports its work lazily)."""
    from castillo_core.cli.install import install, uninstall
    from castillo_core.cli.prompts import command as prompts
    from castillo_core.cli.rescore import command as rescore
    from castillo_core.cli.verify import command as verify

    for command in (install, prompts, rescore, uninstall, verify):
        if command.name not in cli.commands:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: add core and plugin commands, then run.

    ``castillo --version`` answers before any plugin is discovered (it needs none).
    """
    from castillo_core.plugins import get_plugins

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--version":
        click.echo(f"castillo, version {__version__}")
        return
    _add_core_commands()
    get_plugins().register_commands(cli)
    cli.main(args=argv, prog_name="castillo")


if __name__ == "__main__":
    main()
