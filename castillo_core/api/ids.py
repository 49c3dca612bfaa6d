"""Stable identifiers, exactly as CASTILLO v1 computed them, and per-prompt seeds."""

from __future__ import annotations

import hashlib

_SEED_MASK = 0x7FFF_FFFF  # seeds stay positive 31-bit: every backend library accepts them


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def prompt_id(dataset: str, prompt_text: str) -> str:
    """v1's prompt id: ``sha256(f"{dataset}_{prompt_text}")[:16]``."""
    return _sha16(f"{dataset}_{prompt_text}")


def sample_id(
    dataset: str, model: str, top_k: int | None, top_p: float | None, temp: float | None, prompt_text: str
) -> str:
    """v1's sample id over dataset, model, the three sampling values and the prompt text."""
    return _sha16(f"{dataset}_{model}_topk_{top_k}_topp_{top_p}_temp_{temp}_{prompt_text}")


def model_name(model_id: str) -> str:
    """The stored model name: the model id with "/" replaced by "--" (v1's convention)."""
    return model_id.replace("/", "--")


def prompt_seed(run_seed: int, prompt_id_: str, n_samples: int = 1) -> int:
    """The seed of a prompt's first sample; sample ``i`` uses ``prompt_seed + i``.

    Derived from the run seed and the prompt id, never shared across prompts: one seeded
    sampler broadcast over a batch makes every prompt's samples share one noise stream.
    Kept low enough that ``seed + n_samples - 1`` still fits in 31 bits.
    """
    digest = hashlib.sha256(f"castillo-seed:{run_seed}:{prompt_id_}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (_SEED_MASK - max(n_samples, 1) + 1)
