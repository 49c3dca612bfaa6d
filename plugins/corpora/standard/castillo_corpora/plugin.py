"""Entry point of castillo-corpora (``[project.entry-points.castillo] corpora``).

Registering the corpora imports only the standard library, numpy, pydantic and
castillo_core's public API: listing them never loads datasets, pandas or pyarrow.parquet.
"""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl
from castillo_corpora.corpora import V1_CORPORA, HumanEvalCorpus
from castillo_corpora.generic import HubCorpus, JsonlCorpus


@hookimpl
def castillo_register_corpora(register: Any) -> None:
    for corpus in (*V1_CORPORA, HumanEvalCorpus, JsonlCorpus, HubCorpus):
        register(corpus)
