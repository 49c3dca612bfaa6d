"""Per-prompt statistics: against numpy, and against CASTILLO v1's published rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from castillo_core import length_stats, prompt_id, sample_id


def test_statistics_match_numpy_on_random_data() -> None:
    rng = np.random.default_rng(7)
    rows = rng.integers(1, 15_000, size=(500, 10))
    stats = length_stats(rows)
    for i, row in enumerate(rows):
        assert stats.mean[i] == pytest.approx(np.mean(row), rel=0, abs=1e-9)
        assert stats.std[i] == pytest.approx(np.std(row), rel=0, abs=1e-9)
        for name, q in (("p25", 25), ("p50", 50), ("p75", 75), ("p99", 99)):
            assert stats.percentiles[name][i] == pytest.approx(np.percentile(row, q), abs=1e-9)
        assert stats.minimum[i] == row.min() and stats.maximum[i] == row.max()
        assert stats.argmin[i] == int(np.argmin(row)) and stats.argmax[i] == int(np.argmax(row))


def test_ragged_rows_are_exact_and_ties_pick_the_first_index() -> None:
    rows = [[5, 1, 1, 5], [3], [2, 9, 9, 2, 7]]
    stats = length_stats(rows)
    for i, row in enumerate(rows):
        assert stats.mean[i] == pytest.approx(np.mean(row))
        assert stats.std[i] == pytest.approx(np.std(row))
        assert stats.percentiles["p99"][i] == pytest.approx(np.percentile(row, 99))
    assert list(stats.argmin) == [1, 0, 0]
    assert list(stats.argmax) == [0, 0, 1]
    with pytest.raises(ValueError, match="no completions"):
        length_stats([[1, 2], []])


def _v1_rows(shared: Path) -> list[dict]:
    rows = []
    for path in sorted((shared / "results" / "test").glob("preproc_*.json")):
        rows.extend(json.loads(path.read_text()))
    return rows


@pytest.mark.shared
def test_recomputing_v1_rows_matches_v1_to_its_rounding(shared_v1: Path) -> None:
    rows = _v1_rows(shared_v1)
    assert len(rows) == 14_121
    stats = length_stats([r["output_sizes"] for r in rows])
    mismatches = []
    for i, row in enumerate(rows):
        # v1 rounded mean and std to 2 decimals and percentiles to 3
        ok = (
            round(float(stats.mean[i]), 2) == pytest.approx(row["output_mean"], abs=0.0051)
            and round(float(stats.std[i]), 2) == pytest.approx(row["output_std"], abs=0.0051)
            and all(
                round(float(stats.percentiles[k][i]), 3) == pytest.approx(row["output_percentiles"][k], abs=0.00051)
                for k in ("p25", "p50", "p75", "p99")
            )
        )
        if not ok:
            mismatches.append(row["sample_id"])
    assert mismatches == []


@pytest.mark.shared
def test_ids_are_v1_ids(shared_v1: Path) -> None:
    rows = _v1_rows(shared_v1)
    for row in rows[::50]:
        assert prompt_id(row["dataset"], row["prompt_text"]) == row["prompt_id"]
        assert (
            sample_id(row["dataset"], row["model"], row["top_k"], row["top_p"], row["temp"], row["prompt_text"])
            == row["sample_id"]
        )
