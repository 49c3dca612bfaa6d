"""Which rows a degeneration detector flags, and which of their samples it removes.

``v1-length`` is v1's rule on lengths (:func:`castillo_core.v1_length_flags`, on the stored
numbers). Any other detector comes from a metric plugin through the registry (views never
import a plugin): the metric that declares a per-response ``flag`` column for it
(:meth:`castillo_core.Column.flag`). Rows with per-response flags in the responses table use
them; rows without (a v1 import keeps one text per row, its longest response) run the
metric on ``longest_response`` and remove that sample plus every sample that reached the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from castillo_core import (
    DEGENERATION_TEXT,
    V1_DETECTOR,
    CastilloError,
    MetricContext,
    ResponseBatch,
    flag_column,
    get_plugins,
)
from castillo_core import v1_length_flags as rule_flags


class ViewError(CastilloError):
    """A view that cannot be computed (unknown detector, no cap, a foreign --to directory)."""


@dataclass
class Flags:
    """Per row: flagged or not, which samples (positions in ``output_sizes``) to remove."""

    degenerate: np.ndarray
    remove: list[np.ndarray | None]

    @property
    def dropped(self) -> np.ndarray:
        """Flagged rows with no sample left (v1 leaves them out of ``sanitized``)."""
        return np.array(
            [bool(d) and r is not None and bool(r.all()) for d, r in zip(self.degenerate, self.remove, strict=True)],
            dtype=bool,
        )


def _caps(prompts: pa.Table, cap: int | None) -> np.ndarray:
    if cap is not None:
        return np.full(prompts.num_rows, cap, dtype=np.int64)
    if "max_new_tokens" not in prompts.column_names:
        raise ViewError("the prompts table has no max_new_tokens column; pass --cap (v1's is 15000)")
    column = prompts.column("max_new_tokens")
    if column.null_count:
        raise ViewError(f"{column.null_count} row(s) have no max_new_tokens (the cap); pass --cap (v1's is 15000)")
    return column.to_numpy().astype(np.int64)


def _sizes(prompts: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """All lengths flattened, and each row's offsets into them."""
    column = prompts.column("output_sizes").combine_chunks()
    if column.null_count:
        raise ViewError(f"{column.null_count} row(s) have no output_sizes")
    offsets = column.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    values = column.flatten().to_numpy().astype(np.int64)
    if np.any(np.diff(offsets) == 0):
        raise ViewError("a row has an empty output_sizes list; it has no samples to describe")
    return values, offsets


def v1_length_flags(prompts: pa.Table, cap: int | None = None) -> Flags:
    """v1's rule (:func:`castillo_core.v1_length_flags`) on stored numbers: v1's rounded mean and
    std for imported rows, as v1 did."""
    if prompts.num_rows == 0:
        return Flags(np.zeros(0, dtype=bool), [])
    caps = _caps(prompts, cap)
    values, offsets = _sizes(prompts)
    mean = prompts.column("output_mean").to_numpy(zero_copy_only=False).astype(np.float64)
    std = prompts.column("output_std").to_numpy(zero_copy_only=False).astype(np.float64)
    flagged = rule_flags(values, offsets, mean, std, caps)
    degenerate = np.logical_or.reduceat(flagged, offsets[:-1])
    remove: list[np.ndarray | None] = [
        flagged[offsets[row] : offsets[row + 1]] if degenerate[row] else None for row in range(prompts.num_rows)
    ]
    return Flags(degenerate, remove)


def _detector_metric(name: str, cap: int) -> Any:
    """The installed metric that declares a per-response ``flag`` column for detector ``name``."""
    known = [V1_DETECTOR]
    for entry in get_plugins().entries("metric"):
        if not entry.available:
            continue
        metric = entry.cls(MetricContext(max_new_tokens=cap, n=1))
        flags = {c.detector for c in metric.response_columns() if c.role == "flag"}
        known.extend(sorted(d for d in flags if d))
        if name in flags:
            return metric
    raise ViewError(
        f"unknown detector {name!r}: no installed metric declares a flag column for it. "
        f"Known detectors: {', '.join(dict.fromkeys(known))} (install castillo-metrics for `repetition`)"
    )


def text_flags(prompts: pa.Table, responses: pa.Table | None, name: str, cap: int | None = None) -> Flags:
    """A plugin detector's flags: per-response flags where stored, else on longest_response."""
    count = prompts.num_rows
    if count == 0:
        return Flags(np.zeros(0, dtype=bool), [])
    caps = _caps(prompts, cap)
    values, offsets = _sizes(prompts)
    column = flag_column(name)
    degenerate = np.zeros(count, dtype=bool)
    remove: list[np.ndarray | None] = [None] * count
    stored = _stored_flags(prompts, responses, column, offsets)
    pending = [row for row in range(count) if stored[row] is None]
    for row in range(count):
        flags = stored[row]
        if flags is not None and flags.any():
            degenerate[row] = True
            remove[row] = flags
    if pending:
        texts = prompts.column("longest_response").to_pylist()
        for cap_value in np.unique(caps[pending]):
            rows = [r for r in pending if caps[r] == cap_value and texts[r] not in (None, DEGENERATION_TEXT)]
            if not rows:
                continue
            flagged = _score_texts([texts[r] for r in rows], values, offsets, rows, int(cap_value), name, column)
            for row, hit in zip(rows, flagged, strict=True):
                if not hit:
                    continue
                sizes = values[offsets[row] : offsets[row + 1]]
                mask = sizes >= cap_value - 1
                mask[int(np.argmax(sizes))] = True  # the longest response is the text judged
                degenerate[row] = True
                remove[row] = mask
    return Flags(degenerate, remove)


def _score_texts(
    texts: list[str], values: np.ndarray, offsets: np.ndarray, rows: list[int], cap: int, name: str, column: str
) -> np.ndarray:
    metric = _detector_metric(name, cap)
    tokens = np.array([values[offsets[r] : offsets[r + 1]].max() for r in rows], dtype=np.int64)
    batch = ResponseBatch(
        texts,
        tokens,
        ["length" if t >= cap - 1 else "stop" for t in tokens],
        np.arange(len(rows) + 1, dtype=np.int64),
        cap,
    )
    return np.asarray(metric.score(batch)[column], dtype=bool)


def _stored_flags(
    prompts: pa.Table, responses: pa.Table | None, column: str, offsets: np.ndarray
) -> list[np.ndarray | None]:
    """Per row, the stored per-response flags in ``output_sizes`` order, or None when absent."""
    out: list[np.ndarray | None] = [None] * prompts.num_rows
    if responses is None or responses.num_rows == 0 or column not in responses.column_names:
        return out
    keys = _row_keys(responses)
    flags = responses.column(column).to_numpy(zero_copy_only=False)
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    for row, key in enumerate(_row_keys(prompts)):
        indices = by_key.get(key)
        if indices is None or len(indices) != offsets[row + 1] - offsets[row]:
            continue
        values = flags[indices]
        if any(v is None for v in values):
            continue
        out[row] = np.asarray(values, dtype=bool)
    return out


def _row_keys(table: pa.Table) -> list[str]:
    """One key per row that ties a prompt row to its responses: sample id and config hash."""
    sample = table.column("sample_id").to_pylist()
    config = table.column("config_hash").to_pylist() if "config_hash" in table.column_names else [""] * len(sample)
    return [f"{s}\x00{c}" for s, c in zip(sample, config, strict=True)]


def detect(prompts: pa.Table, responses: pa.Table | None, detector: str, cap: int | None = None) -> Flags:
    """The flags of ``detector`` (``v1-length`` or a plugin detector such as ``repetition``)."""
    if detector == V1_DETECTOR:
        return v1_length_flags(prompts, cap)
    return text_flags(prompts, responses, detector, cap)
