"""``castillo run --dry-run``: the plan and its cost, before any GPU hour is spent.

Nothing is loaded (unless ``--probe`` asks to measure the real backend's speed) and
nothing is written: prompts are read, the output's finished prompts are counted, and
the generated tokens are estimated from a reference dataset's mean lengths.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from castillo_core.api.errors import CastilloError


def load_estimates(path: str | Path) -> dict[tuple[str, str], float]:
    """Mean response length per (model, dataset) of a castillo dataset (e.g. imported v1)."""
    import numpy as np

    from castillo_core.engine.dataset import read_table

    table = read_table(path, "prompts", columns=["model", "dataset", "output_mean"])
    sums: dict[tuple[str, str], list[float]] = {}
    models = table.column("model").to_pylist()
    datasets = table.column("dataset").to_pylist()
    means = table.column("output_mean").to_pylist()
    for model, dataset, mean in zip(models, datasets, means, strict=True):
        if mean is not None:
            sums.setdefault((model, dataset), []).append(mean)
    return {key: float(np.mean(values)) for key, values in sums.items()}


def _estimate(estimates: dict[tuple[str, str], float], model: str, dataset: str) -> tuple[float | None, str]:
    if (model, dataset) in estimates:
        return estimates[(model, dataset)], "model x dataset"
    same_dataset = [v for (m, d), v in estimates.items() if d == dataset]
    if same_dataset:
        return sum(same_dataset) / len(same_dataset), "dataset mean over other models"
    return None, "no reference"


def plan_rows(engine: Any, estimates: dict[tuple[str, str], float], tokens_per_second: float | None) -> list[dict]:
    from castillo_core.engine.engine import load_prompts

    rows = []
    for cell in engine.cells:
        gen = cell.generation
        row: dict[str, Any] = {
            "model": cell.model,
            "dataset": cell.dataset,
            "backend": cell.backend_cls.name,
            "n": gen.n,
            "max_new_tokens": gen.max_new_tokens,
            **cell_settings(cell),
            "config_hash": cell.config_hash,
        }
        try:
            prompt_set = load_prompts(cell)
        except CastilloError as exc:
            row.update(error=str(exc), prompts=None, remaining=None)
            rows.append(row)
            continue
        done = engine.store.finished(cell.model, cell.dataset).get(cell.config_hash, set())
        remaining = sum(1 for p in prompt_set.prompts if p.prompt_id not in done)
        mean, basis = _estimate(estimates, cell.model, cell.dataset)
        row.update(
            prompts=len(prompt_set.prompts),
            done=len(prompt_set.prompts) - remaining,
            remaining=remaining,
            samples=remaining * gen.n,
            rejected=len(prompt_set.rejections),
            estimate_basis=basis,
            mean_length=mean,
        )
        row["max_tokens"] = remaining * gen.n * gen.max_new_tokens  # every completion at the cap
        if mean is not None:
            tokens = remaining * gen.n * min(mean, gen.max_new_tokens)
            row["expected_tokens"] = tokens
            if tokens_per_second:
                row["expected_seconds"] = tokens / tokens_per_second
        if tokens_per_second:
            row["max_seconds"] = row["max_tokens"] / tokens_per_second
        rows.append(row)
    return rows


SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
MODEL_DEFAULT = "model"  # a value the backend reads from the model's generation config when it opens it


def cell_settings(cell: Any) -> dict[str, Any]:
    """What a cell decodes with, as far as it is known before the model loads.

    Sampling values set for the run or pinned by the model entry (a preset's recorded
    values) are shown as numbers; under ``model_defaults`` an unset one is ``"model"`` (read
    from the model's generation config at load time), otherwise the backend's neutral value.
    ``truncation_supported``/``counting_supported`` say whether the cell's backend implements
    the cell's truncation and counting modes (a run would stop on the first cell that does not).
    """
    from castillo_core.api.contracts import Backend
    from castillo_core.api.records import SamplingSettings

    gen = cell.generation
    neutral = SamplingSettings.from_config(gen)
    values: dict[str, Any] = {}
    for key in SAMPLING:
        value = getattr(gen, key)
        values[key] = value if value is not None else (MODEL_DEFAULT if gen.model_defaults else getattr(neutral, key))
    backend = cell.backend_cls
    return {
        **values,
        "model_defaults": gen.model_defaults,
        "dtype": cell.spec.dtype or "auto",
        "revision": cell.spec.revision,
        "seed": gen.seed,
        "max_prompt_tokens": gen.max_prompt_tokens,
        "truncation": gen.truncation,
        "truncation_supported": gen.truncation != "v1" or backend.cut_prompts is not Backend.cut_prompts,
        "counting": gen.counting,
        "counting_supported": gen.counting in backend.counting_modes,
    }


def _settings_line(row: dict[str, Any]) -> str:
    """One cell's decoding settings in a line (the same for every cell of a group)."""

    def shown(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    sampling = ", ".join(f"{k} {shown(row[k])}" for k in SAMPLING)
    truncation = row["truncation"] + ("" if row["truncation_supported"] else f" (not by {row['backend']})")
    counting = row["counting"] + ("" if row["counting_supported"] else f" (not by {row['backend']})")
    return (
        f"{sampling}; dtype {row['dtype']}, n {row['n']}, max_new_tokens {shown(row['max_new_tokens'])}, "
        f"max_prompt_tokens {shown(row['max_prompt_tokens'])}, truncation {truncation}, counting {counting}, "
        f"seed {row['seed']}"
    )


def _settings_groups(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_settings_line(row), []).append(row)
    return list(groups.items())


def _cells_of(rows: list[dict[str, Any]]) -> str:
    """The cells of a settings group, compactly: models x datasets when they form a grid."""
    by_model: dict[str, list[str]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r["dataset"])
    grids: dict[tuple[str, ...], list[str]] = {}
    for model, datasets in by_model.items():
        grids.setdefault(tuple(datasets), []).append(model)
    parts = [f"{', '.join(models)} x {', '.join(datasets)}" for datasets, models in grids.items()]
    return f"{'; '.join(parts)} ({len(rows)} cell{'s' if len(rows) != 1 else ''})"


def probe(engine: Any, prompts: int = 2, max_new_tokens: int = 64) -> float:
    """Generated tokens per second of the first model's backend on a few prompts."""
    from castillo_core.api.requests import build_requests
    from castillo_core.engine.engine import load_prompts

    cell = engine.cells[0]
    selected = load_prompts(cell).prompts[:prompts]
    if not selected:
        raise CastilloError(f"--probe: {cell.label} has no prompts to probe with")
    gen = cell.generation.model_copy(update={"max_new_tokens": min(max_new_tokens, cell.generation.max_new_tokens)})
    backend = cell.backend_cls(cell.spec)
    backend.open()
    try:
        settings = backend.sampling(gen)
        rendered = backend.render(selected, gen.max_prompt_tokens)
        requests = build_requests(selected, rendered, gen, backend=cell.backend_cls.name)
        start = time.perf_counter()
        tokens = sum(c.output_tokens for res in backend.generate(requests, settings, gen) for c in res.completions)
        return tokens / max(time.perf_counter() - start, 1e-9)
    finally:
        backend.close()


def _human_seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


PLAN_FIELDS = (
    "model",
    "dataset",
    "backend",
    "n",
    "max_new_tokens",
    *SAMPLING,
    "model_defaults",
    "dtype",
    "revision",
    "seed",
    "max_prompt_tokens",
    "truncation",
    "truncation_supported",
    "counting",
    "counting_supported",
    "prompts",
    "done",
    "remaining",
    "samples",
    "rejected",
    "estimate_basis",
    "mean_length",
    "expected_tokens",
    "max_tokens",
    "expected_seconds",
    "max_seconds",
    "config_hash",
    "error",
)
_PLAN_CAPTION = (
    "left: prompts not stored yet; samples: completions to generate (left x n); cap: max_new_tokens; "
    "mean: reference mean length (--estimate-from); tokens, time: expected, or at most (≤) when every "
    "completion reaches the cap (no reference); time needs --tokens-per-second or --probe"
)


def show_plan(engine: Any, opts: dict[str, Any]) -> None:
    from castillo_core.cli.tables import Column, console, print_csv, print_json, print_table

    estimates = load_estimates(opts["estimate_from"]) if opts.get("estimate_from") else {}
    tps = opts.get("tokens_per_second")
    if opts.get("probe"):
        tps = probe(engine)
    rows = plan_rows(engine, estimates, tps)
    if opts.get("as_csv"):
        print_csv(PLAN_FIELDS, rows)
        return
    if opts.get("log_json") or opts.get("as_json"):
        print_json({"tokens_per_second": tps, "probed": bool(opts.get("probe")), "cells": rows})
        return
    out = console()
    columns = [
        Column("model"),
        Column("dataset"),
        Column("prompts", numeric=True),
        Column("left", numeric=True),
        Column("samples", numeric=True),
        Column("cap", numeric=True),
        Column("mean", numeric=True),
        Column("tokens", numeric=True),
        Column("time", numeric=True),
    ]
    table = []
    for r in rows:
        if r.get("error"):
            table.append([r["model"], r["dataset"], "-", "-", "-", f"{r['max_new_tokens']:,}", "-", "-", "-"])
            continue
        mean = f"{r['mean_length']:.0f}" if r.get("mean_length") is not None else "?"
        if "expected_tokens" in r:
            tokens = f"{r['expected_tokens']:,.0f}"
            seconds = _human_seconds(r["expected_seconds"]) if "expected_seconds" in r else "?"
        else:
            tokens = f"≤{r['max_tokens']:,}"
            seconds = f"≤{_human_seconds(r['max_seconds'])}" if "max_seconds" in r else "?"
        table.append(
            [
                r["model"],
                r["dataset"],
                f"{r['prompts']:,}",
                f"{r['remaining']:,}",
                f"{r['samples']:,}",
                f"{r['max_new_tokens']:,}",
                mean,
                tokens,
                seconds,
            ]
        )
    title = f"castillo run --dry-run -> {engine.spec.out} ({len(rows)} cells)"
    print_table(out, columns, table, title=title, caption=_PLAN_CAPTION, group=True)
    errors: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.get("error"):
            errors.setdefault((r["dataset"], r["error"]), []).append(r["model"])
    out.print("decoding settings (values marked 'model' come from the model's generation config):", highlight=False)
    for line, group in _settings_groups(rows):
        out.print(f"  {line}", markup=False, highlight=False)
        out.print(f"    {_cells_of(group)}", markup=False, highlight=False, style="dim")
    for (dataset, error), models in errors.items():
        who = models[0] if len(models) == 1 else f"{len(models)} models"
        out.print(f"{dataset} ({who}): not runnable: {error}", style="yellow", markup=False, highlight=False)
    out.print(_total_line(rows, tps, bool(opts.get("probe")), bool(estimates)), markup=False, highlight=False)


def _total_line(rows: list[dict[str, Any]], tps: float | None, probed: bool, estimates: bool) -> str:
    """``total: N completions, about T generated tokens at R tokens/s: S`` (or an upper bound from the cap)."""
    runnable = [r for r in rows if not r.get("error")]
    samples = sum(r["samples"] for r in runnable)
    at_cap = [r for r in runnable if "expected_tokens" not in r and r["samples"]]
    tokens = sum(r.get("expected_tokens", r["max_tokens"]) for r in runnable)
    if not at_cap:
        amount = f"about {tokens:,.0f} generated tokens"
    elif len(at_cap) == len([r for r in runnable if r["samples"]]):
        amount = f"at most {tokens:,.0f} generated tokens (every completion at its cap)"
    else:
        amount = f"about {tokens:,.0f} generated tokens ({len(at_cap)} cell(s) counted at their cap, an upper bound)"
    line = f"total: {samples:,} completions, {amount}"
    if tps:
        bound = "at most " if at_cap and len(at_cap) == len([r for r in runnable if r["samples"]]) else ""
        line += f" at {tps:,.0f} tokens/s{' (probed)' if probed else ''}: {bound}{_human_seconds(tokens / tps)}"
    else:
        line += "; pass --tokens-per-second or --probe for the time"
    if not estimates and at_cap:
        line += "; pass --estimate-from DATASET for an estimate of the tokens"
    return line
