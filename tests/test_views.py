"""`castillo sanitize OUT`: v1's original, degenerate and sanitized configs.

The expected rows come from a reference written here from v1's published rule
(``sanitize_dataset`` in v1's scripts/sanitize_dataset.py), applied to the JSON records
themselves, so the views are checked against v1's behaviour and not against our own code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from castillo_core.engine.dataset import read_table
from tests.helpers import castillo
from tests.test_v1_import import MODEL, small_v1, v1_record, write_v1

DEGENERATION = "TEXT DEGENERATION"


def v1_reference(rows: list[dict[str, Any]], cap: int = 15_000) -> tuple[list[dict], list[dict]]:
    """v1's rule: degenerate rows unchanged; sanitized rows with offending lengths removed."""
    capped_at, limit = cap - 1, cap * 8_499 // 15_000
    degenerate, sanitized = [], []
    for row in rows:
        sizes = row["output_sizes"]
        longest = max(sizes)
        hit_cap = longest >= capped_at
        high_variance = row["output_std"] > 2 * row["output_mean"] and longest > limit
        if not (hit_cap or high_variance):
            sanitized.append(row)
            continue
        degenerate.append(row)
        kept = [s for s in sizes if s <= limit] if high_variance else [s for s in sizes if s < capped_at]
        if not kept:  # v1 drops a row with nothing left (every sample hit the cap)
            continue
        q = np.percentile(kept, [25, 50, 75, 99])
        sanitized.append(
            {
                **row,
                "output_sizes": kept,
                "output_mean": float(np.mean(kept)),
                "output_std": float(np.std(kept)),
                "longest_response": DEGENERATION,
                "output_percentiles": {f"p{p}": float(v) for p, v in zip((25, 50, 75, 99), q, strict=True)},
            }
        )
    return degenerate, sanitized


def _records(source: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(source.glob("*.json")) for r in json.loads(f.read_text())]


def _assert_rows_equal(table_rows: list[dict], expected: list[dict]) -> None:
    got = {r["sample_id"]: r for r in table_rows}
    assert set(got) == {r["sample_id"] for r in expected}
    for row in expected:
        mine = got[row["sample_id"]]
        assert mine["output_sizes"] == row["output_sizes"]
        assert mine["longest_response"] == row["longest_response"]
        assert mine["shortest_response"] == row["shortest_response"]
        assert mine["output_mean"] == pytest.approx(row["output_mean"], abs=1e-9)
        assert mine["output_std"] == pytest.approx(row["output_std"], abs=1e-9)
        for key, value in row["output_percentiles"].items():
            assert mine["output_percentiles"][key] == pytest.approx(value, abs=1e-9)


def _views(root: Path) -> dict[str, list[dict]]:
    return {name: read_table(root / name, "prompts").to_pylist() for name in ("original", "degenerate", "sanitized")}


def _with_high_variance(directory: Path) -> Path:
    small_v1(directory)
    write_v1(
        directory,
        "DS1000",
        "test",
        MODEL,
        [
            # std > 2 x mean and longest > 8,499 without reaching the cap: v1's second rule
            v1_record("DS1000", MODEL, "Pad an array.", [8890, 352, 448, 326, 378, 444, 351, 339, 396, 535]),
            # long but steady: not degenerate
            v1_record("DS1000", MODEL, "Explain pandas.", [9000, 9100, 9050, 9200, 8900, 9010, 9020, 9030, 9040, 9060]),
        ],
    )
    return directory


def test_sanitize_matches_v1_rule(tmp_path: Path) -> None:
    source, out = _with_high_variance(tmp_path / "v1"), tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    result = castillo("sanitize", str(out), "--json")
    summary = json.loads(result.stdout)
    assert summary["rows"] == {"original": 6, "degenerate": 3, "sanitized": 5}
    views = _views(out / "views" / "v1-length")
    degenerate, sanitized = v1_reference(_records(source))
    _assert_rows_equal(views["degenerate"], degenerate)
    _assert_rows_equal(views["sanitized"], sanitized)
    _assert_rows_equal(views["original"], _records(source))
    by_text = {r["prompt_text"]: r for r in views["sanitized"]}
    story = by_text["Write a long story."]
    assert story["n_samples"] == 9 and story["output_max"] == 910 and story["n_length_capped"] == 0
    assert "Loop forever." not in by_text  # every sample hit the cap: dropped, as v1 did
    assert by_text["Pad an array."]["output_sizes"] == [352, 448, 326, 378, 444, 351, 339, 396, 535]
    assert by_text["Explain pandas."]["longest_response"] != DEGENERATION


def test_degenerate_rows_are_unchanged_and_views_are_castillo_outputs(tmp_path: Path) -> None:
    source, out, to = small_v1(tmp_path / "v1"), tmp_path / "out", tmp_path / "views"
    castillo("import", "castillo-v1", str(source), str(out))
    castillo("sanitize", str(out), "--to", str(to))
    original = {r["sample_id"]: r for r in read_table(out, "prompts").to_pylist()}
    for row in read_table(to / "degenerate", "prompts").to_pylist():
        assert row == original[row["sample_id"]]
    shown = json.loads(castillo("show", str(to / "sanitized"), "--json").stdout)
    assert {r["dataset"] for r in shown} == {"Alpaca", "Mbpp"}
    assert json.loads((to / "sanitized" / "manifest.json").read_text())["view"] == "sanitized"
    castillo("sanitize", str(out), "--to", str(to))  # writing the views again replaces them
    assert read_table(to / "original", "prompts").num_rows == 4


def test_sanitize_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    source, out = small_v1(tmp_path / "v1"), tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    (tmp_path / "mine" / "original").mkdir(parents=True)
    (tmp_path / "mine" / "original" / "notes.txt").write_text("keep me")
    result = castillo("sanitize", str(out), "--to", str(tmp_path / "mine"), check=False)
    assert result.returncode == 2 and "is not a castillo view" in result.stderr
    assert (tmp_path / "mine" / "original" / "notes.txt").exists()


def test_unknown_detector_lists_the_known_ones(tmp_path: Path) -> None:
    source, out = small_v1(tmp_path / "v1"), tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    result = castillo("sanitize", str(out), "--detector", "repetiton", check=False)
    assert result.returncode == 2 and "unknown detector 'repetiton'" in result.stderr and "v1-length" in result.stderr


def test_repetition_detector_on_imported_longest_responses(tmp_path: Path) -> None:
    pytest.importorskip("castillo_metrics", reason="install plugins/metrics/standard")
    loop = "Here is the list:\n" + "- buy now, get it discounted\n" * 400
    rows = [
        v1_record(
            "Alpaca", MODEL, "List offers.", [15001, 300, 310, 320, 330, 340, 350, 360, 370, 380], longest_response=loop
        ),
        v1_record(
            "Alpaca",
            MODEL,
            "Long loop that stopped.",
            [4000, 300, 310, 320, 330, 340, 350, 360, 370, 380],
            longest_response=loop,
        ),
        v1_record("Alpaca", MODEL, "A fine answer.", [400, 300, 310, 320, 330, 340, 350, 360, 370, 380]),
    ]
    source, out = tmp_path / "v1", tmp_path / "out"
    write_v1(source, "Alpaca", "test", MODEL, rows)
    castillo("import", "castillo-v1", str(source), str(out))
    summary = json.loads(castillo("sanitize", str(out), "--detector", "repetition", "--json").stdout)
    assert summary["to"].endswith("views/repetition")
    views = _views(out / "views" / "repetition")
    assert {r["prompt_text"] for r in views["degenerate"]} == {"List offers.", "Long loop that stopped."}
    by_text = {r["prompt_text"]: r for r in views["sanitized"]}
    # The judged text is the longest response: it goes, with any sample that reached the cap.
    assert by_text["List offers."]["output_sizes"] == [300, 310, 320, 330, 340, 350, 360, 370, 380]
    assert by_text["Long loop that stopped."]["output_sizes"] == [300, 310, 320, 330, 340, 350, 360, 370, 380]
    assert by_text["A fine answer."]["longest_response"] != DEGENERATION


def test_views_of_a_run_filter_the_responses_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "--quiet",
        "-n",
        "5",
        "--max-new-tokens",
        "60",
        "--seed",
        "2",
        "--out",
        str(out),
    )
    castillo("sanitize", str(out), "--to", str(tmp_path / "v"))
    prompts = read_table(out, "prompts")
    capped = [r for r in prompts.to_pylist() if max(r["output_sizes"]) >= 59]
    assert capped, "the fake backend should hit a cap of 60 tokens"
    degenerate = read_table(tmp_path / "v" / "degenerate", "prompts")
    assert degenerate.num_rows == len(capped)
    responses = read_table(tmp_path / "v" / "degenerate", "responses")
    assert set(responses.column("sample_id").to_pylist()) == {r["sample_id"] for r in capped}
    sanitized = read_table(tmp_path / "v" / "sanitized", "responses")
    assert max(sanitized.column("output_tokens").to_pylist()) < 59  # the capped samples are gone
    rows = read_table(tmp_path / "v" / "sanitized", "prompts").to_pylist()
    assert sum(r["n_samples"] for r in rows) == sanitized.num_rows
    for row in rows:
        assert len(row["finish_reasons"]) == row["n_samples"] and row["n_length_capped"] == 0


@pytest.mark.shared
@pytest.mark.slow  # seconds: the whole published v1 test split
def test_published_test_split_v1_length(shared_v1: Path, tmp_path: Path) -> None:
    source, out = shared_v1 / "results" / "test", tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    summary = json.loads(castillo("sanitize", str(out), "--json").stdout)
    assert summary["rows"] == {"original": 14_121, "degenerate": 129, "sanitized": 14_120}
    records = _records(source)
    degenerate, sanitized = v1_reference(records)
    per_model: dict[str, int] = {}
    for row in degenerate:
        per_model[row["model"]] = per_model.get(row["model"], 0) + 1
    assert {m: c["degenerate"] for m, c in summary["per_model"].items() if c["degenerate"]} == per_model
    assert per_model["meta-llama--Llama-3.2-1B-Instruct"] == 64
    views = _views(out / "views" / "v1-length")
    _assert_rows_equal(views["degenerate"], degenerate)
    _assert_rows_equal(views["sanitized"], sanitized)


@pytest.mark.shared
def test_published_test_split_repetition_against_v1_length(shared_v1: Path) -> None:
    repetition = pytest.importorskip("castillo_metrics.repetition", reason="install plugins/metrics/standard")
    records = _records(shared_v1 / "results" / "test")
    longest = np.array([max(r["output_sizes"]) for r in records])
    hit_cap = longest >= 14_999
    flagged_v1 = hit_cap | np.array([r["output_std"] > 2 * r["output_mean"] for r in records]) & (longest > 8_499)
    flags = repetition.repetition_scores([r["longest_response"] for r in records]).flag
    assert flags[hit_cap].mean() >= 0.95  # recall on the rows whose longest response hit the cap
    assert flags[~flagged_v1].mean() <= 0.01  # at most 1% of the rows v1 does not flag


def test_repetition_views_of_a_run_use_the_stored_per_response_flags(tmp_path: Path) -> None:
    pytest.importorskip("castillo_metrics", reason="install plugins/metrics/standard")
    out = tmp_path / "out"
    castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "--quiet",
        "-n",
        "3",
        "-B",
        "mean_tokens=8",
        "--seed",
        "4",
        "--metric",
        "degeneration",
        "--out",
        str(out),
    )
    responses = read_table(out, "responses")
    flagged = {
        s
        for s, f in zip(
            responses.column("sample_id").to_pylist(),
            responses.column("degenerate_repetition").to_pylist(),
            strict=True,
        )
        if f
    }
    assert 0 < len(flagged) < 12  # fake texts loop once they are long enough (64 bytes) to judge
    castillo("sanitize", str(out), "--detector", "repetition", "--to", str(tmp_path / "v"))
    degenerate = read_table(tmp_path / "v" / "degenerate", "prompts")
    assert set(degenerate.column("sample_id").to_pylist()) == flagged
    kept = read_table(tmp_path / "v" / "sanitized", "responses")
    assert not any(kept.column("degenerate_repetition").to_pylist())
