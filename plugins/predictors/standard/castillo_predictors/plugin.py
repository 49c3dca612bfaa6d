"""Entry point of the ``castillo-predictors`` distribution: registers the predictor classes.

Importing this module imports numpy, pydantic and castillo_core only: scikit-learn,
torch and transformers are imported inside ``fit``/``predict``, so ``castillo list
predictors`` stays fast and says what is missing.
"""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl
from castillo_predictors.embedding import EmbeddingPredictor
from castillo_predictors.simple import InputSizePredictor, MeanPredictor
from castillo_predictors.text import TfidfGbmPredictor, TfidfRidgePredictor

PREDICTORS = (MeanPredictor, InputSizePredictor, TfidfRidgePredictor, TfidfGbmPredictor, EmbeddingPredictor)


@hookimpl
def castillo_register_predictors(register: Any) -> None:
    for cls in PREDICTORS:
        register(cls)


@hookimpl
def castillo_register_commands(cli: Any) -> None:
    from castillo_predictors.predict_command import command as predict
    from castillo_predictors.simulate_command import command as simulate

    cli.add_command(predict)
    cli.add_command(simulate)
