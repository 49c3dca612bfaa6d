"""castillo's llama.cpp backend (``--backend llamacpp``).

Importing this package is cheap on purpose: llama_cpp is imported only when a model is
opened, so listing plugins works on machines without llama-cpp-python.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
