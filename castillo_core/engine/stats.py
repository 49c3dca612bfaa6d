"""Per-prompt statistics of response lengths, exactly as CASTILLO v1 computed them.

v1 used numpy on each prompt's list of N lengths: ``mean``, population ``std``
(ddof=0), ``percentile`` at 25/50/75/99 with linear interpolation, and the texts of the
first shortest and first longest response (``argmin``/``argmax`` pick the first index
on ties). We compute the same numbers vectorized over many prompts at once, because
doing it prompt by prompt is the engine's hottest loop, and keep full precision: v1's
rounding belongs to exports that ask for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PERCENTILES: tuple[tuple[str, float], ...] = (("p25", 25.0), ("p50", 50.0), ("p75", 75.0), ("p99", 99.0))


@dataclass(frozen=True)
class LengthStats:
    """Statistics of many prompts' lengths; every array has one entry per prompt."""

    mean: np.ndarray
    std: np.ndarray
    percentiles: dict[str, np.ndarray]
    minimum: np.ndarray
    maximum: np.ndarray
    argmin: np.ndarray
    argmax: np.ndarray


def length_stats(sizes: Sequence[Sequence[int]] | np.ndarray) -> LengthStats:
    """Statistics of each row of ``sizes`` (one row per prompt, rows may differ in length).

    Rows of equal length are computed as one 2-D block; ragged input (a prompt with a
    different N) is grouped by row length so the result is still exact.
    """
    if isinstance(sizes, np.ndarray) and sizes.ndim == 2:
        return _block_stats(sizes.astype(np.float64, copy=False))
    rows = [np.asarray(r, dtype=np.float64) for r in sizes]
    if not rows:
        empty = np.empty(0)
        return LengthStats(
            empty,
            empty,
            {k: empty for k, _ in PERCENTILES},
            empty,
            empty,
            empty.astype(np.int64),
            empty.astype(np.int64),
        )
    widths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    if np.any(widths == 0):
        raise ValueError("a prompt has no completions; statistics need at least one length")
    if np.all(widths == widths[0]):
        return _block_stats(np.vstack(rows))
    count = len(rows)
    out = {
        "mean": np.empty(count),
        "std": np.empty(count),
        "minimum": np.empty(count),
        "maximum": np.empty(count),
        "argmin": np.empty(count, dtype=np.int64),
        "argmax": np.empty(count, dtype=np.int64),
    }
    pct = {k: np.empty(count) for k, _ in PERCENTILES}
    for width in np.unique(widths):
        idx = np.flatnonzero(widths == width)
        block = _block_stats(np.vstack([rows[i] for i in idx]))
        for name in out:
            out[name][idx] = getattr(block, name)
        for name in pct:
            pct[name][idx] = block.percentiles[name]
    return LengthStats(percentiles=pct, **out)


def _block_stats(block: np.ndarray) -> LengthStats:
    qs = np.percentile(block, [q for _, q in PERCENTILES], axis=1)  # linear interpolation
    return LengthStats(
        mean=block.mean(axis=1),
        std=block.std(axis=1),  # population std, ddof=0, as v1
        percentiles={name: qs[i] for i, (name, _) in enumerate(PERCENTILES)},
        minimum=block.min(axis=1),
        maximum=block.max(axis=1),
        argmin=block.argmin(axis=1),
        argmax=block.argmax(axis=1),
    )
