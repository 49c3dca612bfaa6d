"""Entry point of the ``castillo`` group: registers the llamacpp backend.

Kept free of heavy imports: castillo loads every entry point to list plugins, and this
module (and the backend class it registers) must not import llama_cpp to do so.
"""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl
from castillo_llamacpp.backend import LlamaCppBackend


@hookimpl
def castillo_register_backends(register: Any) -> None:
    register(LlamaCppBackend)
