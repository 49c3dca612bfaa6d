"""Helpers for testing castillo and its plugins.

- :mod:`castillo_core.testing.fakes`: the ``fake`` backend and the ``tiny`` corpus, built-in
  plugins for exercising the engine without a model (never a stand-in for a real backend),
  and ``requests_for``/``generate_sorted`` for backend tests.
- :mod:`castillo_core.testing.conformance`: ``check_backend``, ``check_corpus`` and
  ``check_metric``, the rules every plugin of a kind must follow, for authors' own tests.
- The ``castillo_plugin`` pytest fixture lives in :mod:`castillo_core.pytest_plugin`.
"""

from castillo_core.testing.conformance import check_backend, check_corpus, check_metric
from castillo_core.testing.fakes import (
    FakeBackend,
    TinyCorpus,
    castillo_register_backends,
    castillo_register_corpora,
    env_without_plugins,
    generate_sorted,
    requests_for,
)

__all__ = [
    "FakeBackend",
    "TinyCorpus",
    "castillo_register_backends",
    "castillo_register_corpora",
    "check_backend",
    "check_corpus",
    "check_metric",
    "env_without_plugins",
    "generate_sorted",
    "requests_for",
]
