"""castillo's OpenAI-compatible HTTP backend (``--backend openai``).

Importing this package is cheap on purpose: httpx is imported only when a server is
opened, so listing plugins never pays for the HTTP stack.
"""

from __future__ import annotations

__all__ = ["__version__"]

from importlib.metadata import PackageNotFoundError, version

try:  # the one version of castillo (VERSION at the repository root)
    __version__ = version("castillo-openai")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+local"
