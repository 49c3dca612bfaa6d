"""A module imported on first use: for plugins whose classes use numpy (or any heavy library).

``castillo plugins``, ``castillo list`` and every start of ``castillo`` import each plugin's
entry point; a module-level ``np = lazy_module("numpy")`` keeps that import out of it, while
the code reads as if numpy were imported (``np.asarray(...)``).
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it when an attribute is first looked up."""
    return _LazyModule(name)
