"""CASTILLO v1's constants and its length rule for degeneration, in one place.

castillo reproduces v1's published dataset; the numbers that define v1 live here and
every plugin that needs them (the ``castillo-v1`` preset, the ``degeneration`` metric,
the views, the v1 import and export) imports them from :mod:`castillo_core`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

V1_MAX_NEW_TOKENS = 15_000
"""v1's cap on generated tokens (``max_new_tokens``)."""

V1_MAX_PROMPT_TOKENS = 2_500
"""v1's cap on prompt tokens: longer raw prompts were cut to this many ids."""

V1_N = 10
"""v1's completions per prompt."""

V1_HIGH_VARIANCE_LIMIT = 8_499
"""v1's length threshold for high-variance rows, with its cap of 15,000."""

V1_DETECTOR = "v1-length"
"""The name of v1's length rule as a degeneration detector."""

DEGENERATION_TEXT = "TEXT DEGENERATION"
"""What v1's sanitized rows store as ``longest_response`` once degenerate samples are removed."""


def high_variance_limit(cap: np.ndarray | int) -> np.ndarray:
    """v1's 8,499 scaled with the cap (8,499/15,000 of it, rounded down)."""
    import numpy as np

    return np.asarray(cap, dtype=np.int64) * V1_HIGH_VARIANCE_LIMIT // V1_MAX_NEW_TOKENS


def v1_length_flags(
    tokens: np.ndarray, offsets: np.ndarray, mean: np.ndarray, std: np.ndarray, caps: np.ndarray | int
) -> np.ndarray:
    """Per response, whether v1's rule (``sanitize_dataset``) removes it, relative to each row's cap.

    Responses of row ``j`` are ``tokens[offsets[j]:offsets[j+1]]``; ``mean`` and ``std``
    are the row's statistics (computed, or v1's stored ones for imported rows, as v1 did).
    A row is degenerate when its longest response reaches the cap (``>= cap - 1``) or when
    ``std > 2 * mean`` and its longest exceeds :func:`high_variance_limit`. In a
    high-variance row every response above that limit goes, otherwise every one that
    reached the cap: a row is degenerate exactly when one of its responses is flagged.
    """
    import numpy as np

    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) == 0:
        return np.zeros(0, dtype=bool)
    counts = np.diff(offsets)
    row_caps = np.broadcast_to(np.asarray(caps, dtype=np.int64), counts.shape)
    limit = high_variance_limit(row_caps)
    longest = np.maximum.reduceat(tokens, offsets[:-1])
    high_variance = (np.asarray(std) > 2 * np.asarray(mean)) & (longest > limit)
    per_response_cap = np.repeat(row_caps, counts)
    per_response_limit = np.repeat(limit, counts)
    return np.where(np.repeat(high_variance, counts), tokens > per_response_limit, tokens >= per_response_cap - 1)
