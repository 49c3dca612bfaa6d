"""Generation requests and their seeds: the one place both are made.

Every caller that hands prompts to a backend (the engine, executors' workers,
``castillo_core.testing``, the benchmarks, ``--dry-run --probe``) builds its requests
here, so every path derives seeds the same way: prompt ``p`` of a run with seed ``s``
starts at ``prompt_seed(s, p.prompt_id, n)`` and its sample ``i`` uses that plus ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence

from castillo_core.api.errors import BackendError
from castillo_core.api.ids import prompt_seed
from castillo_core.api.records import GenerationConfig, GenerationRequest, Prompt, Rendered


def build_requests(
    prompts: Sequence[Prompt], rendered: Sequence[Rendered], config: GenerationConfig, backend: str = "backend"
) -> list[GenerationRequest]:
    """One request per prompt (``key`` = its position), seeded from the run seed and the prompt id.

    ``rendered`` is what ``Backend.render`` returned for ``prompts``; ``backend`` names it
    in the error when the two lists do not match.
    """
    if len(rendered) != len(prompts):
        raise BackendError(f"backend {backend} rendered {len(rendered)} of {len(prompts)} prompts")
    n = config.n
    return [
        GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(config.seed, p.prompt_id, n), n=n)
        for i, (p, r) in enumerate(zip(prompts, rendered, strict=True))
    ]
