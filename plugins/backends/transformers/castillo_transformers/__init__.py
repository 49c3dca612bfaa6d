"""castillo's Hugging Face transformers backend (``--backend transformers``, alias ``hf``).

Importing this package, or its ``plugin`` entry point, imports neither torch nor
transformers: castillo lists the backend (and says what to install) without them.
"""

from __future__ import annotations

__all__ = ["TransformersBackend"]


def __getattr__(name: str) -> object:
    if name == "TransformersBackend":
        from castillo_transformers.plugin import TransformersBackend

        return TransformersBackend
    raise AttributeError(name)
