"""Predictors that need nothing but numpy: the baseline and input-size regression."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import Predictor, lazy_module, parse_options
from castillo_predictors.features import GroupMeans, TargetTransform, categories, log_input_size

np = lazy_module("numpy")


class _NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeanPredictor(Predictor):
    """Every prompt of a (model, dataset) gets that cell's training mean.

    The baseline every other predictor must beat: it is what a scheduler knows from a
    dataset's summary table alone, without looking at the prompt.
    """

    name = "mean"
    description = "per-(model, dataset) mean of the target (the baseline; per model, then overall, when unseen)"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        parse_options(_NoOptions, self.options, f"predictor {self.name}")
        self.means = GroupMeans()

    def fit(self, rows: Any, target: np.ndarray) -> None:
        self.means.fit(rows, target)

    def predict(self, rows: Any) -> np.ndarray:
        return self.means.transform(rows)


class InputSizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_target: bool = Field(True, description="fit log(1 + length) rather than the length")
    per_dataset: bool = Field(True, description="a separate intercept per dataset within each model")
    ridge: float = Field(1.0, ge=0.0, description="L2 penalty on the coefficients (not the intercept)")


class InputSizePredictor(Predictor):
    """Per model, length against log(1 + input tokens), with an intercept per dataset.

    The cheapest prompt feature there is (the scheduler counts input tokens anyway):
    longer prompts (code to explain, texts to summarize) often get longer answers.
    """

    name = "input-size"
    description = "per model: regression of length on log(1 + input tokens), with per-dataset intercepts"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.config = parse_options(InputSizeOptions, self.options, f"predictor {self.name}")
        self.transform = TargetTransform(self.config.log_target)
        self.fill = 0.0
        self.datasets: list[str] = []
        self.coefs: dict[str, np.ndarray] = {}
        self.fallback = np.zeros(0)

    def _design(self, rows: Any) -> np.ndarray:
        x = log_input_size(rows, self.fill)
        columns = [np.ones_like(x), x]
        if self.config.per_dataset:
            ds = categories(rows, "dataset")
            columns += [(ds == d).astype(np.float64) for d in self.datasets[1:]]
        return np.column_stack(columns)

    def _solve(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        penalty = np.full(x.shape[1], self.config.ridge)
        penalty[0] = 0.0
        return np.linalg.solve(x.T @ x + np.diag(penalty) + 1e-9 * np.eye(x.shape[1]), x.T @ z)

    def fit(self, rows: Any, target: np.ndarray) -> None:
        raw = log_input_size(rows, np.nan)
        self.fill = float(np.nanmedian(raw)) if np.isfinite(raw).any() else 0.0
        self.datasets = sorted(set(categories(rows, "dataset").tolist()))
        x, z = self._design(rows), self.transform.forward(target)
        models = categories(rows, "model")
        self.fallback = self._solve(x, z)
        self.coefs = {m: self._solve(x[models == m], z[models == m]) for m in sorted(set(models.tolist()))}

    def predict(self, rows: Any) -> np.ndarray:
        x, models = self._design(rows), categories(rows, "model")
        z = np.array([x[i] @ self.coefs.get(m, self.fallback) for i, m in enumerate(models.tolist())])
        return self.transform.inverse(z)
