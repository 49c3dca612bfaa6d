"""TF-IDF predictors: what the words of a prompt say about the length of its answer.

"Write an essay" and "answer yes or no" differ in a few words; TF-IDF finds them.
scikit-learn is imported inside ``fit``/``predict`` only (the entry point stays light).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import Predictor, lazy_module, parse_options
from castillo_predictors.features import BoostedCells, CategoryBlock, TargetTransform, log_input_size, texts

np = lazy_module("numpy")

_HINT = "pip install scikit-learn (or: pip install 'castillo-predictors[sklearn]')"


class _TfidfOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_features: int = Field(50_000, ge=1, description="vocabulary size of the TF-IDF")
    ngram_max: int = Field(2, ge=1, le=3, description="longest word n-gram")
    min_df: int = Field(2, ge=1, description="ignore n-grams in fewer prompts than this")
    log_target: bool = Field(True, description="fit log(1 + length): lengths are skewed and multiplicative")


def _fit_vectorizer(options: _TfidfOptions, unique: list[str]) -> tuple[Any, Any]:
    """A fitted TF-IDF vectorizer and the matrix of ``unique``.

    On a corpus so small that no n-gram reaches ``min_df`` prompts, every n-gram is
    kept instead of failing: a tiny dataset should still run end to end.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    for min_df in dict.fromkeys((options.min_df, 1)):
        vectorizer = TfidfVectorizer(
            max_features=options.max_features,
            ngram_range=(1, options.ngram_max),
            min_df=min_df,
            sublinear_tf=True,
            dtype=np.float32,
        )
        try:
            return vectorizer, vectorizer.fit_transform(unique)
        except ValueError:  # "empty vocabulary" or "max_df corresponds to < documents than min_df"
            if min_df == 1:
                raise
    raise AssertionError("unreachable")


class _UniqueText:
    """Fit and apply a text transform once per distinct prompt, then broadcast to rows.

    The prompts table repeats each prompt once per model (13 times in v1), so fitting
    the vectorizer on rows would weigh every prompt by how many models answered it.
    """

    @staticmethod
    def split(rows: Any) -> tuple[list[str], np.ndarray]:
        values = texts(rows)
        index: dict[str, int] = {}
        inverse = np.array([index.setdefault(t, len(index)) for t in values], dtype=np.int64)
        return list(index), inverse


class TfidfRidgeOptions(_TfidfOptions):
    alpha: float = Field(3.0, gt=0.0, description="ridge penalty")


class TfidfRidgePredictor(Predictor):
    """Ridge regression on TF-IDF of the prompt text plus model, dataset and pair one-hots.

    Linear in log space, so a prompt's words scale every model's length by the same
    factor while the one-hots carry each (model, dataset) cell's level.
    """

    name = "tfidf-ridge"
    description = "ridge on TF-IDF of the prompt text + model/dataset one-hots + log input size"
    requires: ClassVar[tuple[str, ...]] = ("sklearn",)
    install_hint = _HINT

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.config = parse_options(TfidfRidgeOptions, self.options, f"predictor {self.name}")
        self.transform = TargetTransform(self.config.log_target)
        self.block = CategoryBlock()
        self.vectorizer: Any = None
        self.model: Any = None
        self.fill = 0.0

    def _features(self, rows: Any) -> Any:
        from scipy import sparse

        unique, inverse = _UniqueText.split(rows)
        words = self.vectorizer.transform(unique)[inverse]
        dense = np.column_stack([self.block.transform(rows), log_input_size(rows, self.fill)])
        return sparse.hstack([words, sparse.csr_matrix(dense)], format="csr")

    def fit(self, rows: Any, target: np.ndarray) -> None:
        from sklearn.linear_model import Ridge

        self.fill = float(np.median(log_input_size(rows, 0.0)))
        self.block.fit(rows)
        self.vectorizer = _fit_vectorizer(self.config, _UniqueText.split(rows)[0])[0]
        self.model = Ridge(alpha=self.config.alpha).fit(self._features(rows), self.transform.forward(target))

    def predict(self, rows: Any) -> np.ndarray:
        return self.transform.inverse(self.model.predict(self._features(rows)))


class TfidfGbmOptions(_TfidfOptions):
    components: int = Field(64, ge=1, description="SVD components kept from the TF-IDF")
    max_iter: int = Field(300, ge=1, description="boosting iterations")
    learning_rate: float = Field(0.05, gt=0.0)
    max_leaf_nodes: int = Field(31, ge=2)
    loss: Literal["squared_error", "absolute_error"] = "squared_error"
    seed: int = 0
    threads: int = Field(1, ge=0, description="OpenMP threads while boosting (0: one per core)")


class TfidfGbmPredictor(Predictor):
    """Gradient boosting on SVD-reduced TF-IDF, model and dataset, input size and cell mean.

    Trees find what a linear model cannot: that a kind of prompt makes one model
    verbose and another terse (see :class:`~castillo_predictors.features.BoostedCells`).
    """

    name = "tfidf-gbm"
    description = "gradient boosting on SVD(TF-IDF) + model/dataset + log input size + cell mean"
    requires: ClassVar[tuple[str, ...]] = ("sklearn",)
    install_hint = _HINT

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.config = parse_options(TfidfGbmOptions, self.options, f"predictor {self.name}")
        self.transform = TargetTransform(self.config.log_target)
        self.booster = BoostedCells(
            self.config.max_iter,
            self.config.learning_rate,
            self.config.max_leaf_nodes,
            self.config.loss,
            self.config.seed,
            self.config.threads,
        )
        self.vectorizer: Any = None
        self.svd: Any = None

    def _reduced(self, rows: Any) -> np.ndarray:
        unique, inverse = _UniqueText.split(rows)
        return self.svd.transform(self.vectorizer.transform(unique))[inverse]

    def fit(self, rows: Any, target: np.ndarray) -> None:
        from sklearn.decomposition import TruncatedSVD

        unique = _UniqueText.split(rows)[0]
        self.vectorizer, words = _fit_vectorizer(self.config, unique)
        n_components = max(1, min(self.config.components, words.shape[1] - 1, len(unique) - 1))
        self.svd = TruncatedSVD(n_components=n_components, random_state=self.config.seed).fit(words)
        self.booster.fit(rows, self.transform.forward(target), self._reduced(rows))

    def predict(self, rows: Any) -> np.ndarray:
        return self.transform.inverse(self.booster.predict(rows, self._reduced(rows)))
