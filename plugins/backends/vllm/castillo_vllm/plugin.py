"""Entry point of the ``castillo-vllm`` distribution: registers the ``vllm`` backend.

Registering imports only castillo_vllm's own light modules; vllm and torch load when a
model is opened.
"""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl
from castillo_vllm.backend import VllmBackend


@hookimpl
def castillo_register_backends(register: Any) -> None:
    register(VllmBackend)
