"""Two castillo outputs side by side: matched cells, paired changes, per-prompt distances.

The result of :func:`compare_runs` is one JSON-ready dict (the ``--json`` output, schema
``castillo.compare/1``); the terminal table, the HTML page and the Markdown are rendered
from it (``render.py``).

Matching: a cell is (model, dataset) on both sides when the two runs share models, or one
dataset across two models when each run holds one model (``--by dataset``). Within a cell,
prompts match by ``prompt_id``, which castillo derives from the dataset and the prompt text
(v1's ids), so the same prompt has the same id in every run and model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castillo_compare.bootstrap import Settings, cell_rng, intervals, mean_of, nanmean_of, ratio_of
from castillo_compare.distances import distances
from castillo_core import CastilloError, read_table

SCHEMA = "castillo.compare/1"
BY_CHOICES = ("auto", "cell", "dataset")
_COLUMNS = ["prompt_id", "model", "dataset", "output_sizes", "n_length_capped"]


@dataclass
class _Prompt:
    sizes: list[int]
    capped: int | None


@dataclass
class _Run:
    path: Path
    label: str
    rows: int
    # (model, dataset) -> prompt_id -> the prompt's lengths
    cells: dict[tuple[str, str], dict[str, _Prompt]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        return sorted({model for model, _ in self.cells})


def _load(path: str | Path, label: str | None, side: str) -> _Run:
    root = Path(path)
    try:
        table = read_table(root, "prompts", columns=_COLUMNS)
    except CastilloError as exc:
        raise CastilloError(f"run {side}: {exc}") from None
    if table.num_rows == 0:
        raise CastilloError(f"run {side} ({root}) holds no prompts: nothing to compare (is the run finished?)")
    if "output_sizes" not in table.column_names:
        raise CastilloError(f"run {side} ({root}) has no output_sizes column: it records no lengths to compare")
    run = _Run(root, label or root.resolve().name or str(root), table.num_rows)
    capped = table.column("n_length_capped").to_pylist() if "n_length_capped" in table.column_names else None
    columns = zip(
        table.column("prompt_id").to_pylist(),
        table.column("model").to_pylist(),
        table.column("dataset").to_pylist(),
        table.column("output_sizes").to_pylist(),
        capped if capped is not None else [None] * table.num_rows,
        strict=True,
    )
    for prompt_id, model, dataset, sizes, n_capped in columns:
        if not sizes:
            continue  # a prompt without lengths cannot be compared
        prompts = run.cells.setdefault((model, dataset), {})
        prompts.setdefault(prompt_id, _Prompt([int(s) for s in sizes if s is not None], n_capped))
    return run


def _pick_model(run: _Run, model: str | None, side: str, option: str) -> None:
    if model is None:
        return
    if model not in run.models:
        raise CastilloError(f"run {side} ({run.path}) holds no model {model!r} ({option}); it holds {run.models}")
    run.cells = {key: prompts for key, prompts in run.cells.items() if key[0] == model}


def _pairs(a: _Run, b: _Run, by: str) -> tuple[str, list[tuple[str, str, str]], list[dict[str, Any]]]:
    """How cells match, the matched (model A, model B, dataset) triples, and what is left unmatched."""
    if by == "auto":
        if set(a.models) & set(b.models):
            by = "cell"
        elif len(a.models) == 1 and len(b.models) == 1:
            by = "dataset"
        else:
            raise CastilloError(
                f"runs A and B share no model (A: {', '.join(a.models)}; B: {', '.join(b.models)}): "
                "choose one model of each with --model-a and --model-b to compare them per dataset"
            )
    if by == "dataset":
        for run, side, option in ((a, "A", "--model-a"), (b, "B", "--model-b")):
            if len(run.models) > 1:
                raise CastilloError(
                    f"--by dataset compares one model of each run, but run {side} ({run.path}) holds "
                    f"{len(run.models)}: {', '.join(run.models)}; choose one with {option}"
                )
        keys_a = {dataset: model for model, dataset in a.cells}
        keys_b = {dataset: model for model, dataset in b.cells}
        pairs = [(keys_a[d], keys_b[d], d) for d in sorted(set(keys_a) & set(keys_b))]
        unmatched = [
            _unmatched(a if side == "A" else b, side, model, dataset)
            for side, mine, theirs in (("A", keys_a, keys_b), ("B", keys_b, keys_a))
            for dataset, model in sorted(mine.items())
            if dataset not in theirs
        ]
        return by, pairs, unmatched
    common = sorted(set(a.cells) & set(b.cells))
    pairs = [(model, model, dataset) for model, dataset in common]
    unmatched = [
        _unmatched(run, side, model, dataset)
        for run, side, other in ((a, "A", b), (b, "B", a))
        for model, dataset in sorted(run.cells)
        if (model, dataset) not in other.cells
    ]
    return by, pairs, unmatched


def _unmatched(run: _Run, side: str, model: str, dataset: str) -> dict[str, Any]:
    """A cell of one run that the other run lacks."""
    prompts = len(run.cells[(model, dataset)])
    return {
        "model_a": model if side == "A" else None,
        "model_b": model if side == "B" else None,
        "dataset": dataset,
        "prompts_a": prompts if side == "A" else 0,
        "prompts_b": prompts if side == "B" else 0,
        "reason": f"only in {side}",
    }


def _cells(run: _Run) -> str:
    return ", ".join(f"{model} x {dataset}" for model, dataset in sorted(run.cells)) or "none"


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _summary(values: Any) -> dict[str, float | None]:
    import numpy as np

    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": None, "median": None, "max": None}
    return {"mean": float(values.mean()), "median": float(np.median(values)), "max": float(values.max())}


def _moments(samples: list[list[int]]) -> tuple[Any, Any]:
    """Mean and population standard deviation (v1's ddof 0) of each non-empty sample."""
    import numpy as np

    counts = np.array([len(s) for s in samples])
    flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean = np.add.reduceat(flat, starts) / counts
    deviation = flat - np.repeat(mean, counts)
    return mean, np.sqrt(np.add.reduceat(deviation * deviation, starts) / counts)


def _compare_cell(
    a: dict[str, _Prompt], b: dict[str, _Prompt], key: str, settings: Settings, top: int
) -> dict[str, Any] | None:
    import numpy as np

    ids = sorted(pid for pid in set(a) & set(b) if a[pid].sizes and b[pid].sizes)
    if not ids:
        return None
    n = len(ids)
    sizes_a = [a[pid].sizes for pid in ids]
    sizes_b = [b[pid].sizes for pid in ids]
    mean_a, std_a = _moments(sizes_a)
    mean_b, std_b = _moments(sizes_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv_a = np.where(mean_a > 0, std_a / np.where(mean_a > 0, mean_a, 1.0), np.nan)
        cv_b = np.where(mean_b > 0, std_b / np.where(mean_b > 0, mean_b, 1.0), np.nan)
    samples_a = np.array([len(s) for s in sizes_a], dtype=np.float64)
    samples_b = np.array([len(s) for s in sizes_b], dtype=np.float64)
    has_capped = all(a[pid].capped is not None and b[pid].capped is not None for pid in ids)
    capped_a = np.array([a[pid].capped or 0 for pid in ids], dtype=np.float64)
    capped_b = np.array([b[pid].capped or 0 for pid in ids], dtype=np.float64)

    def relative(index: Any) -> Any:
        base = mean_of(mean_a, index)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(base > 0, mean_of(mean_b, index) / np.where(base > 0, base, 1.0) - 1.0, np.nan)

    changes = {
        "mean_length": lambda index: mean_of(mean_b, index) - mean_of(mean_a, index),
        "relative": relative,
        "cv": lambda index: nanmean_of(cv_b, index) - nanmean_of(cv_a, index),
    }
    if has_capped:
        changes["capped_share"] = lambda index: (
            ratio_of(capped_b, samples_b, index) - ratio_of(capped_a, samples_a, index)
        )
    found = intervals(changes, n, settings, cell_rng(settings, key))
    w1, ks = distances(sizes_a, sizes_b)

    def block(name: str, value_a: float | None, value_b: float | None) -> dict[str, Any]:
        ci = found.get(name)
        return {
            "a": value_a,
            "b": value_b,
            "change": ci.change if ci else None,
            "ci": [ci.low, ci.high] if ci and ci.change is not None else None,
        }

    mean_length = block("mean_length", float(mean_a.mean()), float(mean_b.mean()))
    rel = found["relative"]
    mean_length["relative_change"] = rel.change
    mean_length["relative_ci"] = [rel.low, rel.high] if rel.change is not None else None
    full = np.arange(n)[None, :]
    cv = block("cv", _finite(nanmean_of(cv_a, full)[0]), _finite(nanmean_of(cv_b, full)[0]))
    if has_capped:
        capped = block("capped_share", float(capped_a.sum() / samples_a.sum()), float(capped_b.sum() / samples_b.sum()))
    else:
        capped = {"a": None, "b": None, "change": None, "ci": None}
    order = sorted(range(n), key=lambda i: (-w1[i], -abs(mean_b[i] - mean_a[i]), ids[i]))
    movers = [
        {
            "prompt_id": ids[i],
            "mean_a": float(mean_a[i]),
            "mean_b": float(mean_b[i]),
            "wasserstein": float(w1[i]),
            "ks": float(ks[i]),
        }
        for i in order[:top]
        if w1[i] > 0
    ]
    prompts = [
        {
            "prompt_id": ids[i],
            "n_a": len(sizes_a[i]),
            "n_b": len(sizes_b[i]),
            "mean_a": float(mean_a[i]),
            "mean_b": float(mean_b[i]),
            "std_a": float(std_a[i]),
            "std_b": float(std_b[i]),
            "capped_a": a[ids[i]].capped,
            "capped_b": b[ids[i]].capped,
            "wasserstein": float(w1[i]),
            "ks": float(ks[i]),
        }
        for i in range(n)
    ]
    return {
        "prompts_a": len(a),
        "prompts_b": len(b),
        "matched": n,
        "mean_length": mean_length,
        "cv": cv,
        "capped_share": capped,
        "wasserstein": _summary(w1),
        "ks": _summary(ks),
        "longer": int((mean_b > mean_a).sum()),
        "shorter": int((mean_b < mean_a).sum()),
        "top_movers": movers,
        "prompts": prompts,
    }


def _prompt_texts(run: _Run, ids: set[str]) -> dict[str, str]:
    import pyarrow.compute as pc

    if not ids:
        return {}
    table = read_table(
        run.path, "prompts", columns=["prompt_id", "prompt_text"], filter=pc.field("prompt_id").isin(sorted(ids))
    )
    texts: dict[str, str] = {}
    for pid, text in zip(table.column("prompt_id").to_pylist(), table.column("prompt_text").to_pylist(), strict=True):
        texts.setdefault(pid, text or "")
    return texts


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    *,
    by: str = "auto",
    model_a: str | None = None,
    model_b: str | None = None,
    datasets: tuple[str, ...] = (),
    label_a: str | None = None,
    label_b: str | None = None,
    settings: Settings | None = None,
    top: int = 5,
) -> dict[str, Any]:
    """Compare two castillo outputs; the result is the ``--json`` document (NaN written as None)."""
    if by not in BY_CHOICES:
        raise CastilloError(f"--by {by!r}: choose one of {', '.join(BY_CHOICES)}")
    settings = settings or Settings()
    a = _load(run_a, label_a, "A")
    b = _load(run_b, label_b, "B")
    if a.label == b.label and label_a is None and label_b is None:
        a.label, b.label = str(run_a), str(run_b)
    _pick_model(a, model_a, "A", "--model-a")
    _pick_model(b, model_b, "B", "--model-b")
    if datasets:
        wanted = set(datasets)
        for run in (a, b):
            run.cells = {key: prompts for key, prompts in run.cells.items() if key[1] in wanted}
        known = {d for _, d in a.cells} | {d for _, d in b.cells}
        if not known:
            raise CastilloError(f"neither run holds dataset {', '.join(sorted(wanted))} (--dataset)")
    by, pairs, unmatched = _pairs(a, b, by)
    cells = []
    for cell_a, cell_b, dataset in pairs:
        key = f"{cell_a}\x00{cell_b}\x00{dataset}"
        result = _compare_cell(a.cells[(cell_a, dataset)], b.cells[(cell_b, dataset)], key, settings, top)
        if result is None:
            unmatched.append(
                {
                    "model_a": cell_a,
                    "model_b": cell_b,
                    "dataset": dataset,
                    "prompts_a": len(a.cells[(cell_a, dataset)]),
                    "prompts_b": len(b.cells[(cell_b, dataset)]),
                    "reason": "no shared prompt",
                }
            )
            continue
        cells.append({"model_a": cell_a, "model_b": cell_b, "dataset": dataset, **result})
    if not pairs:
        raise CastilloError(
            f"runs A ({a.path}) and B ({b.path}) share no prompt: no {'dataset' if by == 'dataset' else 'cell'} "
            f"is in both (A: {_cells(a)}; B: {_cells(b)})"
            + ("; --by dataset compares across models" if by == "cell" else "")
        )
    if not cells:
        where = ", ".join(f"{m} x {d}" for m, _, d in pairs)
        raise CastilloError(
            f"runs A ({a.path}) and B ({b.path}) share no prompt ({where}): prompt ids come from the dataset "
            "and the prompt text, so compare runs of the same corpus"
        )
    wanted_texts = {m["prompt_id"] for cell in cells for m in cell["top_movers"]}
    texts = _prompt_texts(a, wanted_texts)
    missing = wanted_texts - set(texts)
    texts.update(_prompt_texts(b, missing))
    for cell in cells:
        for mover in cell["top_movers"]:
            mover["prompt_text"] = texts.get(mover["prompt_id"], "")
    return _clean(
        {
            "schema": SCHEMA,
            "by": by,
            "a": {"path": str(a.path), "label": a.label, "models": a.models, "prompts": a.rows},
            "b": {"path": str(b.path), "label": b.label, "models": b.models, "prompts": b.rows},
            "bootstrap": {
                "resamples": settings.resamples,
                "confidence": settings.confidence,
                "seed": settings.seed,
                "method": "paired percentile bootstrap over matched prompts",
            },
            "top": top,
            "cells": cells,
            "unmatched": unmatched,
        }
    )


def _clean(value: Any) -> Any:
    """NaN and infinities as None, numpy scalars as Python numbers: strict JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value
