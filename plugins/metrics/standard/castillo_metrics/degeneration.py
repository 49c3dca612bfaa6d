"""The ``degeneration`` metric: two detectors, each with a score and a flag per response.

- ``v1-length``: CASTILLO v1's rule on lengths, relative to the run's cap. v1 flagged a
  row when its longest response reached the cap (>= 14,999 with ``max_new_tokens=15000``)
  or when ``std > 2 x mean`` and the longest exceeded 8,499. Per response we flag exactly
  the samples v1's sanitization removes: those that reached the cap (``>= cap - 1``),
  and in a high-variance row every sample above 8,499/15,000 of the cap. Score: the
  share of the cap used (``output_tokens / max_new_tokens``).
- ``repetition``: a loop that runs to the end of the text, found from the text alone
  (:mod:`castillo_metrics.repetition`). Score: ``1 - tail compression ratio``.

Per prompt: how many samples each detector flags and the highest score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import (
    V1_DETECTOR,
    V1_HIGH_VARIANCE_LIMIT,
    V1_MAX_NEW_TOKENS,
    Column,
    Metric,
    ResponseBatch,
    flag_column,
    flag_count_column,
    hookimpl,
    lazy_module,
    v1_length_flags,
)
from castillo_metrics.repetition import MAX_COMPRESSION, NEEDLE, WINDOW, repetition_scores

np = lazy_module("numpy")

REPETITION = "repetition"


def v1_length_scores(batch: ResponseBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per response: v1-length flag (castillo_core's v1 rule) and score (share of the cap used)."""
    tokens = np.asarray(batch.output_tokens, dtype=np.int64)
    cap = int(batch.max_new_tokens)
    if len(tokens) == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    counts = np.diff(batch.offsets)
    mean = batch.reduce(tokens, "mean")
    std = np.sqrt(batch.reduce((tokens - np.repeat(mean, counts)) ** 2, "mean"))  # population std, as v1
    return v1_length_flags(tokens, batch.offsets, mean, std, cap), tokens / max(cap, 1)


class DegenerationOptions(BaseModel):
    """``-M degeneration.KEY=VALUE``: the repetition detector's thresholds."""

    model_config = ConfigDict(extra="forbid")

    max_compression: float = Field(
        MAX_COMPRESSION, gt=0, le=1, description="flag a tail whose zlib ratio is below this (lower: stricter)"
    )
    window: int = Field(WINDOW, ge=NEEDLE * 2, description="characters of the text's end that are examined")


class DegenerationMetric(Metric):
    """Detectors of degenerate responses: ``v1-length`` and ``repetition``."""

    name = "degeneration"
    description = "degeneration detectors v1-length (v1's length rule) and repetition (loops, from the text)"
    Options = DegenerationOptions
    version = "2"  # 2: a text's repetition ratio no longer depends on its place in the batch

    def response_columns(self) -> list[Column]:
        return [
            Column.flag(
                V1_DETECTOR,
                f"v1's rule: reached the cap, or above {V1_HIGH_VARIANCE_LIMIT}/{V1_MAX_NEW_TOKENS} of it in a "
                "high-variance prompt (std > 2 x mean)",
            ),
            Column("v1_length_score", "float64", "output_tokens / max_new_tokens", role="score", detector=V1_DETECTOR),
            Column.flag(
                REPETITION,
                f"ends in a repetition loop: the last {WINDOW} characters (digits as 0) repeat their final "
                f"{NEEDLE}-byte n-gram and are one exact loop or compress below {MAX_COMPRESSION}",
            ),
            Column(
                "repetition_score",
                "float64",
                "1 for an exact loop, else 1 - zlib compression ratio of the tail (0 when it does not end in a repeat)",
                role="score",
                detector=REPETITION,
            ),
            Column(
                "repetition_period",
                "int64",
                f"bytes back to the previous occurrence of the tail's final {NEEDLE}-byte n-gram (0: none)",
            ),
            Column(
                "repetition_compression",
                "float64",
                "zlib ratio of the tail; NaN when not computed (no repeat at the end, or an exact loop)",
            ),
        ]

    def prompt_columns(self) -> list[Column]:
        return [
            Column.flag_count(V1_DETECTOR, "samples flagged by v1-length"),
            Column(
                "v1_length_score_max",
                "float64",
                "highest v1-length score (output_max / max_new_tokens)",
                role="score",
                detector=V1_DETECTOR,
            ),
            Column.flag_count(REPETITION, "samples flagged by repetition"),
            Column(
                "repetition_score_max",
                "float64",
                "highest repetition score of the prompt's samples",
                role="score",
                detector=REPETITION,
            ),
        ]

    def score(self, batch: ResponseBatch) -> Mapping[str, Sequence[Any] | np.ndarray]:
        v1_flag, v1_score = v1_length_scores(batch)
        options = DegenerationOptions.model_validate(dict(self.context.options))
        repetition = repetition_scores(batch.texts, window=options.window, max_compression=options.max_compression)
        return {
            flag_column(V1_DETECTOR): v1_flag,
            "v1_length_score": v1_score,
            flag_column(REPETITION): repetition.flag,
            "repetition_score": repetition.score,
            "repetition_period": repetition.period,
            "repetition_compression": repetition.compression,
        }

    def aggregate(self, batch: ResponseBatch) -> Mapping[str, Sequence[Any] | np.ndarray]:
        if batch.n_prompts == 0:
            return {c.name: np.empty(0) for c in self.prompt_columns()}
        return {
            flag_count_column(V1_DETECTOR): batch.reduce(batch.column(flag_column(V1_DETECTOR)), "sum"),
            "v1_length_score_max": batch.reduce(batch.column("v1_length_score"), "max"),
            flag_count_column(REPETITION): batch.reduce(batch.column(flag_column(REPETITION)), "sum"),
            "repetition_score_max": batch.reduce(batch.column("repetition_score"), "max"),
        }


@hookimpl
def castillo_register_metrics(register: Any) -> None:
    register(DegenerationMetric)
