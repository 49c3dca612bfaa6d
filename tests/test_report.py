"""`castillo report OUT`: a static page, a Markdown summary and the numbers behind them.

Unit tests run the real CLI on small runs of the fake backend; the acceptance check on
v1's published test split (mean lengths equal to the means of v1's `output_mean`) is
marked `shared`. The page in a real browser is tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from castillo_core.engine.dataset import read_table
from tests.helpers import castillo

pytest.importorskip("matplotlib", reason="castillo report draws with matplotlib (pip install matplotlib)")

PNG = b"\x89PNG\r\n\x1a\n"


def _run(out: Path, *extra: str) -> None:
    castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "-n",
        "4",
        "--max-new-tokens",
        "100",
        *extra,
    )


def _summary(report: Path) -> dict[str, Any]:
    return json.loads((report / "summary.json").read_text())


def test_report_of_a_run_shows_its_numbers_provenance_and_problems(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, "-C", "size=20", "-C", "reject_every=5", "--max-prompt-tokens", "7")
    _run(out, "--model", "other/model")
    result = castillo("report", str(out), "--quiet")
    report = out / "report"
    assert f"{report}/index.html" in result.stdout
    summary = _summary(report)
    prompts = read_table(out, "prompts")
    assert summary["rows"] == prompts.num_rows == 16 + 12
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in prompts.to_pylist():
        by_cell[(row["model"], row["dataset"])].append(row)
    assert {(c["model"], c["dataset"]) for c in summary["cells"]} == set(by_cell)
    for cell in summary["cells"]:
        rows = by_cell[(cell["model"], cell["dataset"])]
        assert cell["prompts"] == len(rows)
        assert cell["mean_length"] == pytest.approx(np.mean([r["output_mean"] for r in rows]), rel=1e-12)
        assert cell["mean_std"] == pytest.approx(np.mean([r["output_std"] for r in rows]), rel=1e-12)
        capped = sum(r["n_length_capped"] for r in rows) / sum(r["n_samples"] for r in rows)
        assert cell["share_capped"] == pytest.approx(capped)
        flagged = np.mean([r["n_degenerate_v1_length"] > 0 for r in rows])
        assert cell["degeneration_v1-length"] == pytest.approx(flagged)  # the metric's columns, not re-derived
    assert "degeneration metric" in summary["degeneration_sources"]["v1-length"]
    assert len(summary["truncated"]) == sum(r["prompt_truncated"] for r in prompts.to_pylist()) > 0
    assert summary["rejected_total"] == 4 and {r["reason"] for r in summary["rejected"]} == {"rejected by reject_every"}
    models = {p["model"]: p for p in summary["provenance"]}
    assert set(models) == {"fake/model", "other/model"}
    assert models["fake/model"]["revision"] == "fake-rev" and "max_new_tokens=100" in models["fake/model"]["decoding"]
    assert models["fake/model"]["castillo_version"] and models["fake/model"]["datasets"] == ["Tiny"]

    page = (report / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == sorted(p.name for p in report.glob("*.png")) and len(sources) >= 8
    for name in sources:
        assert (report / name).read_bytes()[:8] == PNG
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained, offline
    assert "fake-rev" in page and "rejected by reject_every" in page
    markdown = (report / "report.md").read_text()
    assert all(f"]({name})" in markdown for name in sources)
    assert "| fake--model | Tiny | 16 |" in markdown


def test_report_of_imported_v1_rows_uses_v1s_length_rule(tmp_path: Path) -> None:
    from tests.test_v1_import import small_v1

    out = tmp_path / "out"
    castillo("import", "castillo-v1", str(small_v1(tmp_path / "v1")), str(out))
    castillo("report", str(out), "--to", str(tmp_path / "report"), "--quiet")
    summary = _summary(tmp_path / "report")
    cells = {c["dataset"]: c for c in summary["cells"]}
    # Alpaca: "Write a long story." and "Loop forever." reached v1's cap; Mbpp's row did not.
    assert cells["Alpaca"]["degeneration_v1-length"] == pytest.approx(2 / 3)
    assert cells["Mbpp"]["degeneration_v1-length"] == 0
    assert cells["Alpaca"]["share_capped"] == pytest.approx(11 / 30)
    assert "v1's length rule" in summary["degeneration_sources"]["v1-length"]
    assert summary["provenance"][0]["source"] == "castillo-v1"


def test_a_model_id_with_dollars_and_brackets_is_drawn_as_text(tmp_path: Path) -> None:
    """`$x^$` is broken mathtext: matplotlib would raise while drawing a tick label or title."""
    out = tmp_path / "out"
    _run(out, "--model", "org/$x^$ [v2] | a_b")
    castillo("report", str(out), "--quiet")
    report = out / "report"
    summary = _summary(report)
    assert [c["model"] for c in summary["cells"]] == ["org--$x^$ [v2] | a_b"]
    assert all((report / f["file"]).read_bytes()[:8] == PNG for f in summary["figures"])
    markdown = (report / "report.md").read_text()
    assert "| org--\\$x^\\$ \\[v2\\] \\| a_b | Tiny |" in markdown  # no math, link or column break on GitHub


def test_report_of_a_missing_output_is_a_clear_error(tmp_path: Path) -> None:
    result = castillo("report", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2 and "is not a castillo output" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.shared
@pytest.mark.slow  # seconds: the whole published v1 test split
def test_report_of_v1s_test_split_matches_v1s_means(shared_v1: Path, tmp_path: Path) -> None:
    """Acceptance: per model x dataset, the mean length equals the mean of v1's output_mean."""
    source = shared_v1 / "results" / "test"
    out = tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    castillo("report", str(out), "--to", str(tmp_path / "report"), "--quiet")
    summary = _summary(tmp_path / "report")
    expected: dict[tuple[str, str], list[float]] = defaultdict(list)
    for path in source.glob("preproc_*.json"):
        for record in json.loads(path.read_text()):
            expected[(record["model"], record["dataset"])].append(record["output_mean"])
    cells = {(c["model"], c["dataset"]): c for c in summary["cells"]}
    assert len(cells) == len(expected) == 91 and summary["rows"] == 14_121
    for key, means in expected.items():
        assert cells[key]["prompts"] == len(means)
        assert cells[key]["mean_length"] == pytest.approx(float(np.mean(means)), rel=1e-12), key
    degenerate = sum(round(c["degeneration_v1-length"] * c["prompts"]) for c in cells.values())
    assert degenerate == 129  # the rows `castillo sanitize` flags on this split (docs/metrics.md)
    markdown = (tmp_path / "report" / "report.md").read_text()
    cell = cells[("google--gemma-3-4b-it", "ShareGPT")]
    assert f"| google--gemma-3-4b-it | ShareGPT | {cell['prompts']} |" in markdown
    assert f"{cell['mean_length']:.1f}" in markdown
