"""Entry point of the example plugin: registers one corpus and one metric.

Only castillo_core's public API is imported, and nothing heavy: this module is
imported every time castillo starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from castillo_core import Column, Corpus, Metric, Prompt, Rejection, ResponseBatch, hookimpl

_DROP_DIGITS = str.maketrans("", "", "0123456789")

PROVERBS = (
    "Explain the proverb 'a stitch in time saves nine'.",
    "Explain the proverb 'the early bird catches the worm'.",
    "Explain the proverb 'don't count your chickens before they hatch'.",
    "Explain the proverb 'actions speak louder than words'.",
    "Explain the proverb 'when in Rome, do as the Romans do'.",
)


class ProverbsCorpus(Corpus):
    """Five prompts asking to explain a proverb."""

    name = "proverbs"
    dataset = "Proverbs"
    description = "five proverbs to explain (example plugin)"
    source_note = "built into castillo-example-plugin"
    license = "CC0"
    size = "5"

    def iter_prompts(self) -> Iterator[Prompt | Rejection]:
        for text in PROVERBS:
            yield Prompt(dataset=self.dataset, split=self.split, prompt_text=text)


class DigitsMetric(Metric):
    """Share of digit characters in a response, and its maximum per prompt."""

    name = "digits"
    description = "share of digit characters per response (example plugin)"

    def response_columns(self) -> list[Column]:
        return [Column("digit_share", "float64", "digits / characters of the response")]

    def prompt_columns(self) -> list[Column]:
        return [Column("digit_share_max", "float64", "largest digit_share among the prompt's responses")]

    def score(self, batch: ResponseBatch) -> dict[str, Any]:
        # str.translate runs in C: deleting the digits and comparing lengths counts them
        shares = [(len(t) - len(t.translate(_DROP_DIGITS))) / len(t) if t else 0.0 for t in batch.texts]
        import numpy as np  # inside: this module is imported at every castillo start

        return {"digit_share": np.asarray(shares, dtype=np.float64)}

    def aggregate(self, batch: ResponseBatch) -> dict[str, Any]:
        return {"digit_share_max": batch.reduce(batch.column("digit_share"), "max")}


@hookimpl
def castillo_register_corpora(register: Any) -> None:
    register(ProverbsCorpus)


@hookimpl
def castillo_register_metrics(register: Any) -> None:
    register(DigitsMetric)
