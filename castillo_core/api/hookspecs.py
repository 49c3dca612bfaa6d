"""The hooks a castillo plugin implements (pluggy project name ``castillo``).

Each ``castillo_register_*`` hook receives a ``register`` callback and calls it once
per class it provides, as simonw/llm does: the plugin stays a few lines long and the
core validates what it is given (contract, unique name) in one place.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("castillo")
hookimpl = pluggy.HookimplMarker("castillo")


@hookspec
def castillo_register_backends(register: Any) -> None:
    """Call ``register(BackendClass)`` for each inference backend the plugin provides."""


@hookspec
def castillo_register_corpora(register: Any) -> None:
    """Call ``register(CorpusClass)`` for each corpus the plugin provides."""


@hookspec
def castillo_register_metrics(register: Any) -> None:
    """Call ``register(MetricClass)`` for each per-response metric the plugin provides."""


@hookspec
def castillo_register_presets(register: Any) -> None:
    """Call ``register(Preset(...))`` for each named run preset the plugin provides."""


@hookspec
def castillo_register_predictors(register: Any) -> None:
    """Call ``register(PredictorClass)`` for each response-length predictor the plugin provides."""


@hookspec
def castillo_register_executors(register: Any) -> None:
    """Call ``register(ExecutorClass)`` for each executor (where cells run) the plugin provides."""


@hookspec
def castillo_register_views(register: Any) -> None:
    """Call ``register(ViewClass)`` for each derived view of a dataset the plugin provides."""


@hookspec
def castillo_register_commands(cli: Any) -> None:
    """Add subcommands to the ``castillo`` click group ``cli``."""
