"""``castillo run``: turn flags (and a grid file) into a run spec, run it, report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from castillo_core.cli import _parse_kv
from castillo_core.errors import ConfigError

_GENERATION_FLAGS = (
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "max_new_tokens",
    "max_prompt_tokens",
    "seed",
    "model_defaults",
)


def build_spec_dict(opts: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The run spec as a dict, and where it came from (for error messages)."""
    from castillo_core.plan import read_grid_file

    where = "command line"
    data: dict[str, Any] = {}
    if opts.get("config_path"):
        data = read_grid_file(opts["config_path"])
        where = f"grid file {opts['config_path']}"
    backend_options = _parse_kv(opts.get("backend_options") or (), "--backend-option")
    corpus_options = _parse_kv(opts.get("corpus_options") or (), "--corpus-option")

    if opts.get("models") or opts.get("backend"):
        backend = opts.get("backend")
        if not backend:
            raise ConfigError("--model needs --backend (which backend runs the model?)")
        models = list(opts.get("models") or ()) or [None]
        data["models"] = [
            {
                "backend": backend,
                "model": m,
                "revision": opts.get("revision"),
                "dtype": opts.get("dtype"),
                "options": backend_options,
            }
            for m in models
        ]
    elif backend_options or opts.get("dtype") or opts.get("revision"):
        for entry in data.get("models", []):
            entry.setdefault("options", {}).update(backend_options)
            for key in ("dtype", "revision"):
                if opts.get(key):
                    entry[key] = opts[key]
    if opts.get("corpora"):
        data["corpora"] = [
            {
                "name": c,
                "source": opts.get("source"),
                "split": opts.get("split"),
                "limit": opts.get("limit"),
                "sample_seed": 42 if opts.get("sample_seed") is None else opts["sample_seed"],
                "options": corpus_options,
            }
            for c in opts["corpora"]
        ]
    else:
        for entry in data.get("corpora", []):
            for key in ("source", "split", "limit", "sample_seed"):
                if opts.get(key) is not None:
                    entry[key] = opts[key]
            entry.setdefault("options", {}).update(corpus_options)
    if "models" not in data:
        raise ConfigError(f"{where}: no model given; pass --backend (and --model) or a [[models]] table")
    if "corpora" not in data:
        raise ConfigError(f"{where}: no corpus given; pass --corpus NAME or a [[corpora]] table")
    generation = dict(data.get("generation") or {})
    for key in _GENERATION_FLAGS:
        if opts.get(key) is not None:
            generation[key] = opts[key]
    data["generation"] = generation
    if opts.get("out"):
        data["out"] = opts["out"]
    if opts.get("no_metrics"):
        data["metrics"] = []
    elif opts.get("metrics"):
        data["metrics"] = list(opts["metrics"])
    if opts.get("no_text"):
        data["keep_text"] = False
    if opts.get("strict"):
        data["strict"] = True
    return data, where


def execute(opts: dict[str, Any], argv: Sequence[str]) -> None:
    from castillo_core.engine import Engine, StopFlag, sigint_flushes
    from castillo_core.errors import Interrupted
    from castillo_core.plan import load_spec
    from castillo_core.plugins import get_plugins
    from castillo_core.progress import JsonProgress, PlainProgress, RichProgress

    data, where = build_spec_dict(opts)
    spec = load_spec(data, where)
    plugins = get_plugins()
    if opts.get("log_json"):
        progress: Any = JsonProgress()
    elif opts.get("quiet"):
        progress = PlainProgress()
    else:
        progress = RichProgress()
    stop = StopFlag()
    engine = Engine(
        spec, plugins, progress=progress, flush_responses=opts.get("flush_every") or 20_000, stop=stop, argv=argv
    )
    with progress, sigint_flushes(stop):
        summary = engine.run()
    if stop:
        raise Interrupted(f"interrupted; finished prompts are stored in {spec.out}")
    _report(summary, quiet=bool(opts.get("quiet") or opts.get("log_json")))


def _report(summary: Any, quiet: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if quiet:
        for cell in summary.cells:
            print(f"{cell.label}\t{cell.status}\tprompts={cell.total}\tnew={cell.written}\ttokens={cell.tokens}")
        return
    table = Table(title=f"castillo run -> {summary.out}")
    for column in ("cell", "status", "prompts", "stored before", "new", "tokens", "tok/s", "rejected", "truncated"):
        table.add_column(column, justify="left" if column in {"cell", "status"} else "right")
    for cell in summary.cells:
        rate = f"{cell.tokens / cell.seconds:,.0f}" if cell.seconds > 0 else "-"
        table.add_row(
            cell.label,
            cell.status,
            str(cell.total),
            str(cell.already_done),
            str(cell.written),
            f"{cell.tokens:,}",
            rate,
            str(len(cell.rejections)),
            str(cell.truncated),
        )
    console.print(table)
    console.print(f"see the lengths: castillo show {summary.out}")
