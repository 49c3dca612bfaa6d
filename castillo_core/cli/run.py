"""``castillo run``: turn flags (over a grid file, over a preset) into a run spec, run it.

Precedence, lowest first: a preset (``--preset``), a grid file (``--config``), flags.
"""

from __future__ import annotations

import copy
import os
import sys
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
    "truncation",
    "counting",
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
    """Run (or plan) the grid the options describe; with ``--log-json`` stderr gets JSON lines only."""
    if not opts.get("log_json"):
        _execute(opts, argv, None)
        return
    from castillo_core.engine.progress import JsonProgress, json_logging

    progress = JsonProgress(every=_progress_seconds())
    context = click.get_current_context(silent=True)
    debug = bool(context and context.find_root().params.get("debug"))
    with json_logging(progress):
        try:
            _execute(opts, argv, progress)
        except CastilloError as exc:
            if debug:
                raise
            hint = "; re-run the same command to resume" if exc.exit_code in {130, 143} else ""
            progress.error(f"{exc}{hint}", exc.exit_code)
            raise click.exceptions.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug:
                raise
            progress.error("interrupted: re-run the same command to resume", 130)
            raise click.exceptions.Exit(130) from None


def _execute(opts: dict[str, Any], argv: Sequence[str], json_progress: Any) -> None:
    from castillo_core.api.errors import Interrupted
    from castillo_core.engine.engine import Engine
    from castillo_core.engine.plan import load_spec
    from castillo_core.engine.signals import StopFlag, sigint_flushes
    from castillo_core.plugins import get_plugins

    data, where = build_spec_dict(opts)
    spec = load_spec(data, where)
    plugins = get_plugins()
    if opts.get("dry_run"):
        from castillo_core.cli.dryrun import show_plan

        show_plan(Engine(spec, plugins), opts)
        return
    stop = StopFlag()
    engine = Engine(
        spec,
        plugins,
        flush_responses=opts.get("flush_every") or 20_000,
        stop=stop,
        argv=argv,
        executor=_executor(opts, spec.out),
    )
    progress = _progress(opts, engine, json_progress)
    engine.progress = progress
    _announce_defaults(engine, progress)
    with progress, sigint_flushes(stop):
        summary = engine.run()
    if stop:
        interrupted = Interrupted(f"interrupted; finished prompts are stored in {spec.out}")
        interrupted.exit_code = stop.exit_code
        raise interrupted
    _report(engine, summary, opts)
    if summary.failures:
        raise CastilloError(
            f"{len(summary.failures)} task(s) failed (listed above); finished prompts are stored in {spec.out}, "
            "re-run the same command to retry the rest"
        )


def _progress(opts: dict[str, Any], engine: Any, json_progress: Any) -> Any:
    """The display: JSON lines (--log-json), warnings only (--quiet), live (a terminal) or plain lines."""
    from castillo_core.engine.live import RichProgress
    from castillo_core.engine.progress import CellInfo, PlainProgress

    cells = {c.label: CellInfo(c.generation.n, c.generation.max_new_tokens) for c in engine.cells}
    if json_progress is not None:
        json_progress.cells_info.update(cells)
        return json_progress
    if opts.get("quiet"):
        return PlainProgress(cells=cells)
    if sys.stderr.isatty():
        return RichProgress(cells=cells)
    return PlainProgress(show_info=True, every=_progress_seconds(), cells=cells)


def _progress_seconds() -> float:
    """Seconds between plain or JSON progress lines: $CASTILLO_PROGRESS_SECONDS, default 10."""
    raw = os.environ.get("CASTILLO_PROGRESS_SECONDS", "")
    try:
        seconds = float(raw)
    except ValueError:
        return 10.0
    return seconds if seconds > 0 else 10.0


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


def _announce_defaults(engine: Any, progress: Any) -> None:
    """Say which model runs when none was given, before anything starts."""
    seen = set()
    for cell in engine.cells:
        if cell.spec.model is None and cell.backend_cls.name not in seen:
            seen.add(cell.backend_cls.name)
            progress.message(
                f"backend {cell.backend_cls.name}: no --model given, using its default model {cell.model_id}", "notice"
            )


def _report(engine: Any, summary: Any, opts: dict[str, Any]) -> None:
    """The run's end: the length table of its cells (as ``castillo show`` prints it), on stdout.

    ``--quiet`` and ``--log-json`` print one tab-separated line per cell instead; ``--json``
    and ``--csv`` print the length table's rows.
    """
    from castillo_core.cli.info import SUMMARY_FIELDS, print_summary, summary_rows
    from castillo_core.cli.tables import console, print_csv, print_json
    from castillo_core.engine.progress import clock

    keys = {c.label: (c.model, c.dataset) for c in engine.cells}
    cells = {keys[c.label] for c in summary.cells if c.label in keys} or set(keys.values())
    if opts.get("as_json") or opts.get("as_csv"):
        rows = summary_rows(summary.out, cells)
        if opts.get("as_json"):
            print_json(rows)
        else:
            print_csv(SUMMARY_FIELDS, rows)
        return
    if opts.get("quiet") or opts.get("log_json"):
        for cell in summary.cells:
            print(f"{cell.label}\t{cell.status}\tprompts={cell.total}\tnew={cell.written}\ttokens={cell.tokens}")
        for failure in summary.failures:
            print(f"failed: {failure}")
        return
    out = console()
    new = sum(c.written for c in summary.cells)
    tokens = sum(c.tokens for c in summary.cells)
    seconds = sum(c.seconds for c in summary.cells)
    line = f"{len(summary.cells)} cell(s), {new:,} new prompt(s), {tokens:,} generated tokens"
    if seconds > 0 and tokens:
        took = f"{seconds:.2f} s" if seconds < 60 else clock(seconds)
        line += f" in {took} ({tokens / seconds:,.0f} tok/s)"
    out.print(line, markup=False, highlight=False)
    for cell in summary.cells:
        notes = [f"{len(cell.rejections)} record(s) rejected"] if cell.rejections else []
        notes += [f"{cell.truncated} prompt(s) truncated"] if cell.truncated else []
        if notes:
            out.print(f"{cell.label}: {', '.join(notes)}", style="yellow", markup=False, highlight=False)
    print_summary(
        summary_rows(summary.out, cells), f"castillo show {summary.out}", empty="nothing stored yet", console=out
    )
    for failure in summary.failures:
        out.print(f"failed: {failure}", style="red", markup=False, highlight=False)
