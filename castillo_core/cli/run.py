"""``castillo run``: turn flags (over a grid file, over a preset) into a run spec, run it.

Precedence, lowest first: a preset (``--preset``), a grid file (``--config``), flags.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import click

from castillo_core.api.errors import CastilloError, ConfigError
from castillo_core.cli import _parse_kv, parse_metric_options

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


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Keys of ``over`` replace those of ``base``; ``generation`` tables merge key by key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key == "generation" and isinstance(value, dict):
            out["generation"] = {**out.get("generation", {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_model_flags(data: dict[str, Any], opts: dict[str, Any], where: str) -> None:
    backend_options = _parse_kv(opts.get("backend_options") or (), "--backend-option")
    backend = opts.get("backend")
    if opts.get("models"):
        if not backend:
            raise ConfigError("--model needs --backend (which backend runs the model?)")
        data["models"] = [
            {
                "backend": backend,
                "model": m,
                "revision": opts.get("revision"),
                "dtype": opts.get("dtype"),
                "options": backend_options,
            }
            for m in opts["models"]
        ]
        return
    if backend and not data.get("models"):
        data["models"] = [{"backend": backend, "model": None}]
    for entry in data.get("models", []):
        if backend:
            entry["backend"] = backend
        entry.setdefault("options", {}).update(backend_options)
        for key in ("dtype", "revision"):
            if opts.get(key):
                entry[key] = opts[key]
        if not entry.get("backend"):
            raise ConfigError(f"{where}: model {entry.get('model')!r} has no backend; pass --backend")


def _apply_corpus_flags(data: dict[str, Any], opts: dict[str, Any]) -> None:
    corpus_options = _parse_kv(opts.get("corpus_options") or (), "--corpus-option")
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
        return
    for entry in data.get("corpora", []):
        for key in ("source", "split", "limit", "sample_seed"):
            if opts.get(key) is not None:
                entry[key] = opts[key]
        entry.setdefault("options", {}).update(corpus_options)


def build_spec_dict(opts: dict[str, Any], base: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The run spec as a dict, and where it came from (for error messages).

    ``base`` is a spec dict under everything else (the Python API's ``run(spec_dict, ...)``).
    """
    from castillo_core.engine.plan import read_grid_file
    from castillo_core.plugins import get_plugins

    where = "command line" if base is None else "run() spec"
    data: dict[str, Any] = copy.deepcopy(base) if base else {}
    if opts.get("preset"):
        data = _merge(get_plugins().preset(opts["preset"]).spec_dict(), data)
        where = f"preset {opts['preset']}"
    if opts.get("config_path"):
        data = _merge(data, read_grid_file(opts["config_path"]))
        where = f"grid file {opts['config_path']}"
    _apply_model_flags(data, opts, where)
    _apply_corpus_flags(data, opts)
    if not data.get("models"):
        raise ConfigError(f"{where}: no model given; pass --backend (and --model) or a [[models]] table")
    if not data.get("corpora"):
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
    metric_options = parse_metric_options(opts.get("metric_options") or ())
    if metric_options:
        data["metric_options"] = {**data.get("metric_options", {}), **metric_options}
    if opts.get("no_text"):
        data["keep_text"] = False
    if opts.get("strict"):
        data["strict"] = True
    return data, where


def execute(opts: dict[str, Any], argv: Sequence[str]) -> None:
    from castillo_core.api.errors import Interrupted
    from castillo_core.engine.engine import Engine
    from castillo_core.engine.plan import load_spec
    from castillo_core.engine.progress import JsonProgress, PlainProgress, RichProgress
    from castillo_core.engine.signals import StopFlag, sigint_flushes
    from castillo_core.plugins import get_plugins

    data, where = build_spec_dict(opts)
    spec = load_spec(data, where)
    plugins = get_plugins()
    if opts.get("dry_run"):
        from castillo_core.cli.dryrun import show_plan

        show_plan(Engine(spec, plugins), opts)
        return
    if opts.get("log_json"):
        progress: Any = JsonProgress()
    elif opts.get("quiet"):
        progress = PlainProgress()
    else:
        progress = RichProgress()
    stop = StopFlag()
    engine = Engine(
        spec,
        plugins,
        progress=progress,
        flush_responses=opts.get("flush_every") or 20_000,
        stop=stop,
        argv=argv,
        executor=_executor(opts, spec.out),
    )
    _announce_defaults(engine)
    with progress, sigint_flushes(stop):
        summary = engine.run()
    if stop:
        interrupted = Interrupted(f"interrupted; finished prompts are stored in {spec.out}")
        interrupted.exit_code = stop.exit_code
        raise interrupted
    _report(summary, quiet=bool(opts.get("quiet") or opts.get("log_json")))
    if summary.failures:
        raise CastilloError(
            f"{len(summary.failures)} task(s) failed (listed above); finished prompts are stored in {spec.out}, "
            "re-run the same command to retry the rest"
        )


_CLUSTER_FLAGS = {"ray_address": "address", "shard_size": "shard_size", "max_retries": "max_retries"}


def _executor(opts: dict[str, Any], out: str) -> Any:
    """The executor plugin named by ``--executor``, with its options, checked before any display.

    The cluster flags are shorthands for executor options (``--ray-address`` -> ``address``,
    ``-R`` -> ``resources``); ``-E KEY=VALUE`` passes any option.
    """
    from castillo_core.api.errors import BackendUnavailableError
    from castillo_core.plugins import get_plugins

    plugins = get_plugins()
    entry = plugins.get("executor", opts.get("executor") or "local")
    options = _parse_kv(opts.get("executor_options") or (), "--executor-option")
    flags = [f for f in _CLUSTER_FLAGS if opts.get(f) is not None]
    options.update({_CLUSTER_FLAGS[f]: opts[f] for f in flags})
    if opts.get("task_resources"):
        flags.append("task_resource")
        options["resources"] = _parse_kv(opts["task_resources"], "--task-resource")
    if entry.name == "local" and flags:
        names = ", ".join("--" + f.replace("_", "-") for f in flags)
        cluster = [e.name for e in plugins.entries("executor") if e.name != "local"]
        raise ConfigError(
            f"{names} only apply with a cluster executor (installed: {', '.join(cluster) or 'none'}), "
            "e.g. --executor ray"
        )
    if entry.missing():
        raise BackendUnavailableError(
            f"executor {entry.name} needs {', '.join(entry.missing())}, which is not installed; "
            f"{getattr(entry.cls, 'install_hint', '') or 'install its plugin with its extra'}"
        )
    executor = entry.cls(options)
    executor.check(out)
    return executor


def _announce_defaults(engine: Any) -> None:
    """Say which model runs when none was given, before anything starts."""
    seen = set()
    for cell in engine.cells:
        if cell.spec.model is None and cell.backend_cls.name not in seen:
            seen.add(cell.backend_cls.name)
            click.echo(
                f"backend {cell.backend_cls.name}: no --model given, using its default model {cell.model_id}", err=True
            )


def _report(summary: Any, quiet: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if quiet:
        for cell in summary.cells:
            print(f"{cell.label}\t{cell.status}\tprompts={cell.total}\tnew={cell.written}\ttokens={cell.tokens}")
        for failure in summary.failures:
            print(f"failed: {failure}")
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
    for failure in summary.failures:
        console.print(f"failed: {failure}", style="red", markup=False, highlight=False)
    console.print(f"see the lengths: castillo show {summary.out}")
