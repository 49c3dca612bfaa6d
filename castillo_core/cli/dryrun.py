"""``castillo run --dry-run``: the plan and its cost, before any GPU hour is spent.

Nothing is loaded (unless ``--probe`` asks to measure the real backend's speed) and
nothing is written: prompts are read, the output's finished prompts are counted, and
the generated tokens are estimated from a reference dataset's mean lengths.
"""

from __future__ import annotations

import json
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
        if mean is not None:
            tokens = remaining * gen.n * min(mean, gen.max_new_tokens)
            row["expected_tokens"] = tokens
            if tokens_per_second:
                row["expected_seconds"] = tokens / tokens_per_second
        rows.append(row)
    return rows


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
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show_plan(engine: Any, opts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    estimates = load_estimates(opts["estimate_from"]) if opts.get("estimate_from") else {}
    tps = opts.get("tokens_per_second")
    if opts.get("probe"):
        tps = probe(engine)
    rows = plan_rows(engine, estimates, tps)
    if opts.get("log_json"):
        print(json.dumps({"tokens_per_second": tps, "cells": rows}, indent=2, default=str))
        return
    console = Console()
    table = Table(title=f"castillo run --dry-run -> {engine.spec.out} ({len(rows)} cells)")
    for column in ("model", "dataset", "prompts", "done", "left", "samples", "cap", "mean len", "tokens", "time"):
        table.add_column(column, justify="left" if column in {"model", "dataset"} else "right", overflow="fold")
    total_tokens = total_samples = 0.0
    for r in rows:
        if r.get("error"):
            table.add_row(r["model"], r["dataset"], "-", "-", "-", "-", str(r["max_new_tokens"]), "-", "-", "-")
            continue
        mean = f"{r['mean_length']:.0f}" if r.get("mean_length") is not None else "?"
        tokens = f"{r['expected_tokens']:,.0f}" if "expected_tokens" in r else "?"
        seconds = _human_seconds(r["expected_seconds"]) if "expected_seconds" in r else "?"
        total_tokens += r.get("expected_tokens", 0)
        total_samples += r["samples"]
        table.add_row(
            r["model"],
            r["dataset"],
            str(r["prompts"]),
            str(r["done"]),
            str(r["remaining"]),
            f"{r['samples']:,}",
            str(r["max_new_tokens"]),
            mean,
            tokens,
            seconds,
        )
    console.print(table)
    errors: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.get("error"):
            errors.setdefault((r["dataset"], r["error"]), []).append(r["model"])
    for (dataset, error), models in errors.items():
        who = models[0] if len(models) == 1 else f"{len(models)} models"
        console.print(f"{dataset} ({who}): not runnable: {error}", style="yellow", markup=False)
    line = f"total: {total_samples:,.0f} completions, about {total_tokens:,.0f} generated tokens"
    if tps:
        line += (
            f" at {tps:,.0f} tokens/s{' (probed)' if opts.get('probe') else ''}: {_human_seconds(total_tokens / tps)}"
        )
    if not estimates:
        line += " (pass --estimate-from DATASET for token estimates)"
    console.print(line, markup=False)
