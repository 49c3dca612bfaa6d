"""castillo's vLLM backend (``--backend vllm``).

Importing this package imports neither vllm nor torch: castillo lists backends on
machines without them. The heavy imports happen in ``VllmBackend.open``.
"""

from __future__ import annotations

__all__ = ["VllmBackend"]


def __getattr__(name: str) -> object:
    # Lazy so that `import castillo_vllm` stays as light as the entry point.
    if name == "VllmBackend":
        from castillo_vllm.backend import VllmBackend

        return VllmBackend
    raise AttributeError(name)
