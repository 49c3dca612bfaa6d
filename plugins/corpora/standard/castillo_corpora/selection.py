"""CASTILLO v1's prompt selection, reproduced without pandas or scikit-learn.

v1 (github.com/DanielFPerez/castillo_code, ``data/notebooks/rawprocess_data_*.ipynb``)
selected at most 2,000 records per corpus with seed 42 and split them 70/20/10 into
train/validate/test, in one of two ways:

* **shuffle** (Alpaca, ShareGPT, Mbpp, DS1000, BigCodeBench)::

      np.random.seed(42); tmp = np.arange(len(data)); np.random.shuffle(tmp)
      tmp = tmp[:min(2000, len(data))]
      train, val, test = np.split(tmp, [int(0.7 * len(tmp)), int(0.9 * len(tmp))])

* **stratified** (Dolly by ``category``, Apps by ``difficulty``), with scikit-learn::

      sampled, _ = train_test_split(df, train_size=2000, stratify=df[key], random_state=42)
      train, tmp = train_test_split(sampled, test_size=0.3, stratify=sampled[key], random_state=42)
      val, test = train_test_split(tmp, test_size=1/3, stratify=tmp[key], random_state=42)

:func:`train_test_split` below re-implements scikit-learn's ``StratifiedShuffleSplit``
draw (``_approximate_mode``, per-class permutations, final permutations) with the same
``numpy.random.RandomState`` calls in the same order, so it returns the same indices;
pulling in scikit-learn and pandas for three calls was not worth the install. Record
orders are v1's too: each split lists its records in the order the draw produced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads when prompts are selected, not when castillo lists plugins
    import numpy as np

V1_SEED = 42
V1_MAXIMUM = 2000
SPLITS = ("train", "validate", "test")


def shuffle_split(n: int, seed: int = V1_SEED, maximum: int | None = V1_MAXIMUM) -> dict[str, list[int]]:
    """v1's shuffle recipe: indices of the records in each split, in v1's order."""
    import numpy as np

    rng = np.random.RandomState(seed)  # what np.random.seed(seed) sets up globally
    order = np.arange(n)
    rng.shuffle(order)
    if maximum is not None:
        order = order[: min(maximum, n)]
    train, validate, test = np.split(order, [int(0.7 * len(order)), int(0.9 * len(order))])
    return {"train": train.tolist(), "validate": validate.tolist(), "test": test.tolist()}


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's ``_approximate_mode``: per-class draws summing to ``n_draws``."""
    import numpy as np

    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        values = np.sort(np.unique(remainder))[::-1]
        for value in values:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def _sizes(n: int, train_size: int | float | None, test_size: int | float | None) -> tuple[int, int]:
    """scikit-learn's ``_validate_shuffle_split`` for the sizes v1 used."""
    if test_size is None and train_size is None:
        test_size = 0.25
    n_test = None
    n_train = None
    if isinstance(test_size, float):
        n_test = math.ceil(test_size * n)
    elif isinstance(test_size, int):
        n_test = test_size
    if isinstance(train_size, float):
        n_train = math.floor(train_size * n)
    elif isinstance(train_size, int):
        n_train = train_size
    if n_train is None:
        n_train = n - int(n_test or 0)
    if n_test is None:
        n_test = n - n_train
    if n_train <= 0 or n_test < 0 or n_train + n_test > n:
        raise ValueError(f"cannot split {n} records into {n_train} and {n_test}")
    return int(n_train), int(n_test)


def train_test_split(
    labels: Sequence[str],
    *,
    train_size: int | float | None = None,
    test_size: int | float | None = None,
    seed: int = V1_SEED,
) -> tuple[list[int], list[int]]:
    """Positions (into ``labels``) of scikit-learn's stratified ``train_test_split``.

    Equal to ``train_test_split(range(n), stratify=labels, random_state=seed, ...)``
    of scikit-learn 1.x, which v1 used; the test suite checks it against scikit-learn
    where that is installed.
    """
    import numpy as np

    n = len(labels)
    n_train, n_test = _sizes(n, train_size, test_size)
    classes, y_indices = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    class_counts = np.bincount(y_indices)
    class_indices = np.split(np.argsort(y_indices, kind="mergesort"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_train, rng)
    class_counts_remaining = class_counts - n_i
    t_i = _approximate_mode(class_counts_remaining, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        permutation = rng.permutation(class_counts[i])
        perm_indices_class_i = class_indices[i].take(permutation, mode="clip")
        train.extend(perm_indices_class_i[: n_i[i]])
        test.extend(perm_indices_class_i[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train).tolist(), rng.permutation(test).tolist()


def stratified_split(
    labels: Sequence[str], seed: int = V1_SEED, maximum: int | None = V1_MAXIMUM
) -> dict[str, list[int]]:
    """v1's stratified recipe: indices (into ``labels``) of each split, in v1's order.

    v1 always had more than 2,000 records here; with ``maximum`` records or fewer the
    first draw is skipped and every record enters the 70/20/10 split.
    """
    positions = list(range(len(labels)))
    if maximum is not None and len(labels) > maximum:
        positions, _ = train_test_split(labels, train_size=maximum, seed=seed)
    if len(positions) < 3:
        return {"train": positions, "validate": [], "test": []}
    sampled = [labels[p] for p in positions]
    train, rest = train_test_split(sampled, test_size=0.3, seed=seed)
    rest_labels = [sampled[r] for r in rest]
    if len(rest) < 2:
        return {"train": [positions[t] for t in train], "validate": [positions[r] for r in rest], "test": []}
    validate, test = train_test_split(rest_labels, test_size=1 / 3, seed=seed)
    return {
        "train": [positions[t] for t in train],
        "validate": [positions[rest[v]] for v in validate],
        "test": [positions[rest[t]] for t in test],
    }
