"""Prompt features every predictor shares: texts, categories, input size, group means.

Only numpy here: the heavy libraries belong to the predictors that need them, inside
their ``fit``/``predict``. Each transform is fitted on the training rows and applied
unchanged to new rows, so a model or dataset never seen in training gets the
fallbacks described below instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from castillo_core import lazy_module

np = lazy_module("numpy")


def texts(rows: Any) -> list[str]:
    """The prompt texts (empty strings where absent)."""
    if "prompt_text" not in rows.column_names:
        return [""] * rows.num_rows
    return [t or "" for t in rows.column("prompt_text").to_pylist()]


def categories(rows: Any, name: str) -> np.ndarray:
    """A string column as a numpy array of str ("" where null or absent)."""
    if name not in rows.column_names:
        return np.full(rows.num_rows, "", dtype=object)
    return np.array([v if v is not None else "" for v in rows.column(name).to_pylist()], dtype=object)


def pair_keys(rows: Any) -> np.ndarray:
    """``model\\0dataset`` per row: the cell a scheduler's per-model statistics live in."""
    models, datasets = categories(rows, "model"), categories(rows, "dataset")
    return np.array([f"{m}\x00{d}" for m, d in zip(models.tolist(), datasets.tolist(), strict=True)], dtype=object)


def log_input_size(rows: Any, fill: float) -> np.ndarray:
    """log(1 + prompt tokens): lengths of prompts span four orders of magnitude."""
    if "input_size" not in rows.column_names:
        return np.full(rows.num_rows, fill)
    raw = np.array([np.nan if v is None else float(v) for v in rows.column("input_size").to_pylist()])
    out = np.log1p(np.clip(raw, 0, None))
    out[~np.isfinite(out)] = fill
    return out


class TargetTransform:
    """Learn in log space (lengths are skewed and act multiplicatively) or as they are."""

    def __init__(self, log: bool) -> None:
        self.log = log

    def forward(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        return np.log1p(np.clip(y, 0, None)) if self.log else y

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        return np.clip(np.expm1(np.clip(z, None, 20.0)) if self.log else z, 0, None)


class OneHot:
    """Dense one-hot columns for the categories seen in training; unseen ones are all zero."""

    def __init__(self) -> None:
        self.levels: dict[str, int] = {}

    def fit(self, values: Sequence[str] | np.ndarray) -> OneHot:
        self.levels = {v: i for i, v in enumerate(sorted(set(np.asarray(values, dtype=object).tolist())))}
        return self

    def codes(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """Integer codes, -1 for an unseen category."""
        return np.array([self.levels.get(v, -1) for v in np.asarray(values, dtype=object).tolist()], dtype=np.int64)

    def transform(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        codes = self.codes(values)
        out = np.zeros((len(codes), len(self.levels)), dtype=np.float64)
        seen = codes >= 0
        out[np.flatnonzero(seen), codes[seen]] = 1.0
        return out


class GroupMeans:
    """Mean of a value per (model, dataset), falling back to per model, then overall.

    The fallbacks make a predictor usable on a model or dataset it was not trained on,
    which is what a scheduler meeting a new corpus needs.
    """

    def __init__(self) -> None:
        self.pairs: dict[str, float] = {}
        self.models: dict[str, float] = {}
        self.overall = 0.0

    def fit(self, rows: Any, values: np.ndarray) -> GroupMeans:
        values = np.asarray(values, dtype=np.float64)
        self.overall = float(values.mean()) if len(values) else 0.0
        self.pairs = _means(pair_keys(rows), values)
        self.models = _means(categories(rows, "model"), values)
        return self

    def transform(self, rows: Any) -> np.ndarray:
        keys, models = pair_keys(rows).tolist(), categories(rows, "model").tolist()
        return np.array(
            [self.pairs.get(k, self.models.get(m, self.overall)) for k, m in zip(keys, models, strict=True)],
            dtype=np.float64,
        )


def _means(keys: np.ndarray, values: np.ndarray) -> dict[str, float]:
    if len(keys) == 0:
        return {}
    levels, inverse = np.unique(keys.astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(levels))
    counts = np.bincount(inverse, minlength=len(levels))
    return {str(k): float(s / c) for k, s, c in zip(levels.tolist(), sums.tolist(), counts.tolist(), strict=True)}


class CategoryBlock:
    """One-hots of model, dataset and their pairs: the per-cell offsets linear models need."""

    def __init__(self) -> None:
        self.model = OneHot()
        self.dataset = OneHot()
        self.pair = OneHot()

    def fit(self, rows: Any) -> CategoryBlock:
        self.model.fit(categories(rows, "model"))
        self.dataset.fit(categories(rows, "dataset"))
        self.pair.fit(pair_keys(rows))
        return self

    def transform(self, rows: Any) -> np.ndarray:
        return np.hstack(
            [
                self.model.transform(categories(rows, "model")),
                self.dataset.transform(categories(rows, "dataset")),
                self.pair.transform(pair_keys(rows)),
            ]
        )


class BoostedCells:
    """Gradient boosting on model, dataset, cell mean, input size and a dense text block.

    Shared by the TF-IDF and embedding boosters: the text block (SVD of TF-IDF, PCA of
    embeddings) is what differs. The cell's training mean (in the target's space) is a
    feature, so the trees learn departures from the baseline; model and dataset enter
    as categories, so the trees can find that a kind of prompt makes one model verbose
    and another terse. scikit-learn is imported in ``fit`` only.
    """

    def __init__(
        self, max_iter: int, learning_rate: float, max_leaf_nodes: int, loss: str, seed: int, threads: int = 1
    ) -> None:
        self.threads = threads
        self.params = {
            "max_iter": max_iter,
            "learning_rate": learning_rate,
            "max_leaf_nodes": max_leaf_nodes,
            "loss": loss,
            "random_state": seed,
            "early_stopping": False,
        }
        self.model_codes = OneHot()
        self.dataset_codes = OneHot()
        self.cell = GroupMeans()
        self.fill = 0.0
        self.model: Any = None

    def _features(self, rows: Any, text_block: np.ndarray) -> np.ndarray:
        codes = []
        for coder, column in ((self.model_codes, "model"), (self.dataset_codes, "dataset")):
            values = coder.codes(categories(rows, column)).astype(np.float64)
            values[values < 0] = np.nan  # unseen: missing, which the trees route by learned defaults
            codes.append(values)
        return np.column_stack([*codes, self.cell.transform(rows), log_input_size(rows, self.fill), text_block])

    def fit(self, rows: Any, z: np.ndarray, text_block: np.ndarray) -> BoostedCells:
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.fill = float(np.median(log_input_size(rows, 0.0)))
        self.model_codes.fit(categories(rows, "model"))
        self.dataset_codes.fit(categories(rows, "dataset"))
        self.cell.fit(rows, z)
        # Trees take at most 255 levels of a category; beyond that, codes are plain numbers.
        categorical = [i for i, c in enumerate((self.model_codes, self.dataset_codes)) if len(c.levels) < 250]
        self.model = HistGradientBoostingRegressor(categorical_features=categorical or None, **self.params)
        with _threads(self.threads):
            self.model.fit(self._features(rows, text_block), z)
        return self

    def predict(self, rows: Any, text_block: np.ndarray) -> np.ndarray:
        with _threads(self.threads):
            return np.asarray(self.model.predict(self._features(rows, text_block)), dtype=np.float64)


def _threads(limit: int) -> Any:
    """Cap OpenMP threads while boosting (0: no cap).

    Boosting spin-waits on its OpenMP threads: on a machine whose cores are busy with
    other work, the default (one thread per core) made a 300-round fit on 240 rows take
    150 s instead of 3 s. One thread is the safe default; raise it on a machine of your own.
    """
    from contextlib import nullcontext

    if limit <= 0:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit, user_api="openmp")
