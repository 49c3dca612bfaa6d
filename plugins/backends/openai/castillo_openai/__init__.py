"""castillo's OpenAI-compatible HTTP backend (``--backend openai``).

Importing this package is cheap on purpose: httpx is imported only when a server is
opened, so listing plugins never pays for the HTTP stack.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
