"""Paired bootstrap over prompts: confidence intervals of per-cell changes.

A cell's matched prompts are resampled with replacement, the same indices on both sides
(the pairing: each prompt is compared with itself), and every statistic is recomputed on
each resample; the interval is the percentile interval of the resampled changes. Resamples
are drawn in blocks so that memory stays bounded on cells of many thousand prompts.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_BLOCK_CELLS = 4_000_000  # resampled indices held at once (32 MB of int64)


@dataclass(frozen=True)
class Settings:
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Interval:
    change: float | None
    low: float | None
    high: float | None


def cell_rng(settings: Settings, key: str) -> Any:
    """The random generator of one cell: its intervals do not depend on which other cells are compared."""
    import numpy as np

    return np.random.default_rng([settings.seed, zlib.crc32(key.encode("utf-8"))])


def intervals(changes: dict[str, Callable[[Any], Any]], n: int, settings: Settings, rng: Any) -> dict[str, Interval]:
    """Each named change with its paired-bootstrap percentile interval.

    ``changes[name](index)`` computes the change (B against A) on the prompts ``index``, a 2-D
    array with one resample per row, returning one value per row: NaN where the resample
    leaves it undefined (such resamples are left out of the percentiles). The point estimate
    is the change on all ``n`` prompts; every change sees the same resamples.
    """
    import numpy as np

    full = np.arange(n)[None, :]
    point = {name: float(change(full)[0]) for name, change in changes.items()}
    draws: dict[str, list[Any]] = {name: [] for name in changes}
    block = max(1, _BLOCK_CELLS // max(n, 1))
    done = 0
    while done < settings.resamples:
        rows = min(block, settings.resamples - done)
        index = rng.integers(0, n, size=(rows, n))
        for name, change in changes.items():
            draws[name].append(change(index))
        done += rows
    alpha = (1.0 - settings.confidence) / 2.0
    out = {}
    for name in changes:
        values = np.concatenate(draws[name])
        values = values[np.isfinite(values)]
        if not np.isfinite(point[name]) or values.size == 0:
            out[name] = Interval(None, None, None)
            continue
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        out[name] = Interval(point[name], float(low), float(high))
    return out


def mean_of(values: Any, index: Any) -> Any:
    return values[index].mean(axis=1)


def nanmean_of(values: Any, index: Any) -> Any:
    """Mean over the defined values of each resample (NaN where none is)."""
    import numpy as np

    picked = values[index]
    defined = np.isfinite(picked)
    count = defined.sum(axis=1)
    total = np.where(defined, picked, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def ratio_of(top_values: Any, bottom_values: Any, index: Any) -> Any:
    """sum(top) / sum(bottom) of each resample (NaN where the bottom sums to 0)."""
    import numpy as np

    top = top_values[index].sum(axis=1)
    bottom = bottom_values[index].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.maximum(bottom, 1), np.nan)
