"""Distances between two empirical length distributions, many prompts at once (numpy only).

For one prompt, side A holds its N_A output sizes and side B its N_B. With F_A and F_B the
empirical CDFs (step functions):

- Wasserstein-1 = the integral of |F_A(x) - F_B(x)| over x, in tokens: how far, on average,
  the lengths had to move. For N_A == N_B it equals mean(|sort(a) - sort(b)|).
- Kolmogorov-Smirnov statistic = max over x of |F_A(x) - F_B(x)|, in [0, 1]: how much the
  two distributions disagree at their worst point, whatever the scale.

Both are evaluated on the union of the observed values, where the step functions change.
Prompts are processed in groups of equal (N_A, N_B), each group as one 2-D array: rows are
shifted apart by a per-row offset so that one ``searchsorted`` over the flattened arrays
evaluates every row's CDF at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def distances(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> tuple[Any, Any]:
    """Wasserstein-1 and KS statistic of each pair (``a[i]``, ``b[i]``) of non-empty samples."""
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"{len(a)} samples on side A but {len(b)} on side B")
    w1 = np.full(len(a), np.nan)
    ks = np.full(len(a), np.nan)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if len(x) and len(y):
            groups.setdefault((len(x), len(y)), []).append(i)
    for rows in groups.values():
        index = np.asarray(rows)
        w1[index], ks[index] = _distances_2d(
            np.asarray([a[i] for i in rows], dtype=np.float64),
            np.asarray([b[i] for i in rows], dtype=np.float64),
        )
    return w1, ks


def _distances_2d(a: Any, b: Any) -> tuple[Any, Any]:
    """Row-wise W1 and KS of two 2-D arrays (m x n_a, m x n_b) of finite values."""
    import numpy as np

    m, n_a = a.shape
    n_b = b.shape[1]
    sa = np.sort(a, axis=1)
    sb = np.sort(b, axis=1)
    points = np.sort(np.concatenate([sa, sb], axis=1), axis=1)  # where the CDFs step
    low = points.min()
    span = points.max() - low + 1.0  # rows land in disjoint intervals [r*span, r*span + span)
    offset = (np.arange(m, dtype=np.float64) * span)[:, None]
    at = (points - low + offset).ravel()
    rows = np.arange(m)[:, None]
    f_a = (np.searchsorted((sa - low + offset).ravel(), at, side="right").reshape(m, -1) - rows * n_a) / n_a
    f_b = (np.searchsorted((sb - low + offset).ravel(), at, side="right").reshape(m, -1) - rows * n_b) / n_b
    gap = np.abs(f_a - f_b)
    ks = gap.max(axis=1)
    w1 = (gap[:, :-1] * np.diff(points, axis=1)).sum(axis=1)
    return w1, ks
