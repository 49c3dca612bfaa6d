"""castillo's llama.cpp backend (``--backend llamacpp``).

Importing this package is cheap on purpose: llama_cpp is imported only when a model is
opened, so listing plugins works on machines without llama-cpp-python.
"""

from __future__ import annotations

__all__ = ["__version__"]

from importlib.metadata import PackageNotFoundError, version

try:  # the one version of castillo (VERSION at the repository root)
    __version__ = version("castillo-llamacpp")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+local"
