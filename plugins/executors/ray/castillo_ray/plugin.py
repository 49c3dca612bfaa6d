"""Entry point of ``castillo-ray``: registers the ``ray`` executor (Ray itself imports only when it runs)."""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl
from castillo_ray.executor import RayExecutor


@hookimpl
def castillo_register_executors(register: Any) -> None:
    register(RayExecutor)
