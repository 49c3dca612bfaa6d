"""The sanitized view's numbers per row, for the report's original-and-sanitized comparison.

The view itself is :func:`castillo_views.views.compute_views` (the code behind ``castillo
sanitize``, the ``sanitized`` view of ``open_dataset`` and the exports), with v1's length
rule. It changes flagged rows only (their offending samples removed, statistics
recomputed; a row left with no sample is dropped), and the rule judges each row on its own
numbers, so the report runs it on the flagged rows alone: the answer is the same as on the
whole table, at a fraction of the cost on a 140,000-row dataset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

VIEW_COLUMNS = (
    "sample_id",
    "config_hash",
    "model",
    "dataset",
    "output_sizes",
    "output_mean",
    "output_std",
    "n_samples",
    "n_length_capped",
    "max_new_tokens",
    "finish_reasons",
)
"""What :func:`castillo_views.views.compute_views` needs to sanitize a row's numbers (no text)."""


@dataclass
class SanitizedRows:
    """Per row of the prompts table, its numbers in the sanitized view.

    ``known`` is False where the view cannot judge the row (no cap recorded); ``kept`` is
    False where the view drops the row (every sample flagged); ``keep_values`` marks, per
    length in ``output_sizes`` order, the samples the view keeps.
    """

    known: np.ndarray
    kept: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    samples: np.ndarray
    capped: np.ndarray
    keep_values: np.ndarray
    flagged: int


def sanitized_rows(
    table: pa.Table,
    offsets: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    samples: np.ndarray,
    capped: np.ndarray,
    rule: np.ndarray,
) -> SanitizedRows | None:
    """The sanitized view (v1's length rule) of every row, or None when the view cannot be computed.

    ``rule`` is v1's length rule per row (:func:`castillo_report.data.rule_flags`: 1.0, 0.0,
    NaN where it cannot judge); the view is computed on the rows it flags.
    """
    from castillo_views.views import compute_views

    from castillo_core import CastilloError, responses_schema

    if np.isnan(rule).all():
        return None
    known = ~np.isnan(rule)
    columns = [c for c in VIEW_COLUMNS if c in table.column_names]
    out = SanitizedRows(
        known=known,
        kept=known.copy(),
        mean=mean.copy(),
        std=std.copy(),
        samples=samples.astype(np.float64).copy(),
        capped=capped.astype(np.float64).copy(),
        keep_values=np.ones(int(offsets[-1]), dtype=bool),
        flagged=0,
    )
    rows = np.flatnonzero(rule == 1.0)
    if rows.size == 0:
        return out
    try:
        views, flags = compute_views(table.select(columns).take(pa.array(rows)), responses_schema().empty_table())
    except CastilloError as exc:  # a row the view refuses (no lengths): the page says why
        log.warning("no sanitized view: %s", exc)
        return None
    dropped = flags.dropped
    out.flagged = int(rows.size)
    out.kept[rows[dropped]] = False
    for position, row in enumerate(rows):
        mask = flags.remove[position]
        if mask is not None:
            out.keep_values[offsets[row] : offsets[row + 1]] = ~np.asarray(mask, dtype=bool)
    survivors = rows[~dropped]
    view = views["sanitized"].prompts
    out.mean[survivors] = view.column("output_mean").to_numpy(zero_copy_only=False)
    out.std[survivors] = view.column("output_std").to_numpy(zero_copy_only=False)
    out.samples[survivors] = view.column("n_samples").to_numpy(zero_copy_only=False)
    if "n_length_capped" in view.column_names:
        out.capped[survivors] = view.column("n_length_capped").cast(pa.float64()).fill_null(np.nan).to_numpy()
    return out
