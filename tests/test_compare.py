"""`castillo compare RUN_A RUN_B` (castillo-compare) on real outputs of the `fake` backend.

Runs made by castillo itself: A (`tiny` corpus, 30 prompts, N=8, mean 64 tokens), B the same
with `-B mean_tokens=40` (clearly shorter), A2 identical to A, C the same as A under a cap of
100 tokens (a quarter of the samples capped), and G the same as A under another model name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import castillo

RUN = ("run", "--backend", "fake", "--corpus", "tiny", "-C", "size=30", "-n", "8", "--quiet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    extra = {
        "A": (),
        "B": ("-B", "mean_tokens=40"),
        "A2": (),
        "C": ("--max-new-tokens", "100"),
        "G": ("--model", "fake/other"),
    }
    for name, flags in extra.items():
        castillo(*RUN, *flags, "--out", str(root / name))
    return {name: root / name for name in extra}


def _compare(*args: str, columns: int = 200) -> dict[str, Any]:
    proc = castillo("compare", *args, "--json", env={"COLUMNS": str(columns)})

    def no_nan(constant: str) -> None:
        raise AssertionError(f"JSON holds {constant}")

    return json.loads(proc.stdout, parse_constant=no_nan)


def _sizes(out: Path) -> dict[str, list[int]]:
    from castillo_core import read_table

    table = read_table(out, "prompts", columns=["prompt_id", "output_sizes"])
    return dict(zip(table.column("prompt_id").to_pylist(), table.column("output_sizes").to_pylist(), strict=True))


def test_a_shorter_run_is_shorter_with_an_interval_that_excludes_zero(runs: dict[str, Path]) -> None:
    result = _compare(str(runs["A"]), str(runs["B"]))
    assert result["by"] == "cell" and len(result["cells"]) == 1 and result["unmatched"] == []
    cell = result["cells"][0]
    assert (cell["model_a"], cell["model_b"], cell["dataset"]) == ("fake--model", "fake--model", "Tiny")
    assert cell["matched"] == cell["prompts_a"] == cell["prompts_b"] == 30
    mean = cell["mean_length"]
    # uniform lengths 1..128 against 1..80: means near 64.5 and 40.5, about 24 tokens (37%) shorter
    assert 55 < mean["a"] < 75 and 33 < mean["b"] < 50
    assert mean["change"] == pytest.approx(mean["b"] - mean["a"])
    assert -32 < mean["change"] < -15 and -0.5 < mean["relative_change"] < -0.25
    low, high = mean["ci"]
    assert low <= mean["change"] <= high < 0
    assert mean["relative_ci"][1] < 0
    assert cell["shorter"] > 20 and cell["wasserstein"]["mean"] > 10 and 0 < cell["ks"]["mean"] <= 1

    # per prompt: W1 and KS of the stored output_sizes, checked against their definitions
    sizes_a, sizes_b = _sizes(runs["A"]), _sizes(runs["B"])
    for prompt in cell["prompts"]:
        a, b = np.sort(sizes_a[prompt["prompt_id"]]), np.sort(sizes_b[prompt["prompt_id"]])
        assert prompt["wasserstein"] == pytest.approx(np.abs(a - b).mean())  # equal N: mean gap of sorted samples
        grid = np.union1d(a, b)
        cdf_a = np.searchsorted(a, grid, side="right") / a.size
        cdf_b = np.searchsorted(b, grid, side="right") / b.size
        assert prompt["ks"] == pytest.approx(np.abs(cdf_a - cdf_b).max())
        assert prompt["mean_a"] == pytest.approx(a.mean()) and prompt["mean_b"] == pytest.approx(b.mean())

    movers = cell["top_movers"]
    assert len(movers) == 5
    assert [m["wasserstein"] for m in movers] == sorted((p["wasserstein"] for p in cell["prompts"]), reverse=True)[:5]
    assert all(m["prompt_text"] and m["mean_b"] < m["mean_a"] for m in movers)


def test_identical_runs_change_nothing(runs: dict[str, Path]) -> None:
    result = _compare(str(runs["A"]), str(runs["A2"]))
    cell = result["cells"][0]
    assert cell["matched"] == 30
    for name in ("mean_length", "cv", "capped_share"):
        block = cell[name]
        assert block["a"] == block["b"] and block["change"] == 0
        low, high = block["ci"]
        assert low <= 0 <= high
    assert cell["wasserstein"] == {"mean": 0.0, "median": 0.0, "max": 0.0}
    assert all(p["wasserstein"] == 0 and p["ks"] == 0 for p in cell["prompts"])
    assert cell["top_movers"] == []
    table = castillo("compare", str(runs["A"]), str(runs["A2"]), env={"COLUMNS": "80"}).stdout
    assert "no prompt's length distribution moved" in table


def test_a_lower_cap_raises_the_capped_share(runs: dict[str, Path]) -> None:
    cell = _compare(str(runs["A"]), str(runs["C"]))["cells"][0]
    capped = cell["capped_share"]
    # lengths above 100 of a uniform 1..128: about 22% of the samples
    assert capped["a"] == 0 and 0.12 < capped["b"] < 0.32
    assert 0 < capped["ci"][0] <= capped["change"] <= capped["ci"][1]
    assert cell["mean_length"]["change"] < 0 and cell["cv"]["ci"][1] < 0


def test_json_is_complete_and_reproducible(runs: dict[str, Path]) -> None:
    args = (str(runs["A"]), str(runs["B"]), "--resamples", "300", "--seed", "7", "--confidence", "0.9", "--top", "3")
    result = _compare(*args)
    assert set(result) == {"schema", "by", "a", "b", "bootstrap", "top", "cells", "unmatched"}
    assert result["schema"] == "castillo.compare/1"
    assert result["bootstrap"]["resamples"] == 300 and result["bootstrap"]["seed"] == 7
    assert result["bootstrap"]["confidence"] == 0.9 and result["top"] == 3
    assert result["a"] == {"path": str(runs["A"]), "label": "A", "models": ["fake--model"], "prompts": 30}
    cell = result["cells"][0]
    assert set(cell) == {
        "model_a", "model_b", "dataset", "prompts_a", "prompts_b", "matched", "mean_length", "cv",
        "capped_share", "wasserstein", "ks", "longer", "shorter", "top_movers", "prompts",
    }  # fmt: skip
    assert set(cell["mean_length"]) == {"a", "b", "change", "ci", "relative_change", "relative_ci"}
    assert set(cell["cv"]) == set(cell["capped_share"]) == {"a", "b", "change", "ci"}
    assert set(cell["wasserstein"]) == set(cell["ks"]) == {"mean", "median", "max"}
    assert len(cell["prompts"]) == 30 and len(cell["top_movers"]) == 3
    assert set(cell["prompts"][0]) == {
        "prompt_id", "n_a", "n_b", "mean_a", "mean_b", "std_a", "std_b", "capped_a", "capped_b", "wasserstein", "ks",
    }  # fmt: skip
    assert set(cell["top_movers"][0]) == {"prompt_id", "prompt_text", "mean_a", "mean_b", "wasserstein", "ks"}
    assert _compare(*args) == result  # the seed fixes the intervals
    other = _compare(*args[:4], "--seed", "8")
    assert other["cells"][0]["mean_length"]["ci"] != cell["mean_length"]["ci"]
    assert other["cells"][0]["mean_length"]["change"] == cell["mean_length"]["change"]


def test_the_table_fits_80_columns_with_every_number_whole(runs: dict[str, Path]) -> None:
    result = _compare(str(runs["A"]), str(runs["C"]))
    out = castillo("compare", str(runs["A"]), str(runs["C"]), env={"COLUMNS": "80"}).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    cell = result["cells"][0]
    mean, capped = cell["mean_length"], cell["capped_share"]
    row = next(line for line in lines if line.startswith("mean length"))
    assert row.split() == [
        "mean", "length", f"{mean['a']:.1f}", f"{mean['b']:.1f}", f"{mean['change']:+.1f}",
        f"[{mean['ci'][0]:+.1f},", f"{mean['ci'][1]:+.1f}]",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith("capped"))
    assert f"{capped['b'] * 100:.1f}%" in row
    assert f"[{capped['ci'][0] * 100:+.1f}, {capped['ci'][1] * 100:+.1f}] pp" in row
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]  # columns are 3 spaces apart at least
    for mover in cell["top_movers"]:
        assert [
            mover["prompt_text"], f"{mover['mean_a']:.1f}", f"{mover['mean_b']:.1f}",
            f"{mover['wasserstein']:.1f}", f"{mover['ks']:.2f}",
        ] in rows  # fmt: skip


def test_two_models_compare_per_dataset(runs: dict[str, Path]) -> None:
    result = _compare(str(runs["A"]), str(runs["G"]))
    assert result["by"] == "dataset"
    cell = result["cells"][0]
    assert (cell["model_a"], cell["model_b"], cell["dataset"]) == ("fake--model", "fake--other", "Tiny")
    assert cell["matched"] == 30
    picked = _compare(str(runs["A"]), str(runs["G"]), "--model-a", "fake--model", "--model-b", "fake--other")
    assert picked["cells"] == result["cells"]
    proc = castillo("compare", str(runs["A"]), str(runs["G"]), "--by", "cell", check=False)
    assert proc.returncode == 2 and "share no prompt" in proc.stderr and "--by dataset" in proc.stderr
    proc = castillo("compare", str(runs["A"]), str(runs["G"]), "--model-b", "nope", check=False)
    assert proc.returncode == 2 and "'nope'" in proc.stderr and "fake--other" in proc.stderr


def _one_line_error(proc: Any) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_refuses_a_run_without_prompts_and_runs_without_a_shared_prompt(runs: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"  # a run whose corpus selected nothing: a manifest, no prompts
    assert castillo(*RUN[:6], "size=0", *RUN[7:], "--out", str(empty), check=False).returncode == 2
    line = _one_line_error(castillo("compare", str(runs["A"]), str(empty), check=False))
    assert "run B" in line and str(empty) in line and "prompts" in line

    pytest.importorskip("castillo_corpora")
    other = tmp_path / "other.jsonl"
    other.write_text('{"prompt": "A prompt the tiny corpus does not have."}\n')
    out = tmp_path / "other"
    castillo(*RUN[:4], "jsonl", "--source", str(other), "-C", "dataset=Tiny", *RUN[7:], "--out", str(out))
    line = _one_line_error(castillo("compare", str(runs["A"]), str(out), check=False))
    assert "share no prompt" in line and "fake--model x Tiny" in line


def test_html_and_markdown_escape_prompt_texts(tmp_path: Path) -> None:
    pytest.importorskip("castillo_corpora")
    hostile = "Explain <script>alert('x')</script> & [bold]List[float][/bold] | `code` *now* [link](javascript:x)"
    long_prompt = "Describe in detail " + "a very long requirement " * 20
    source = tmp_path / "hostile.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (hostile, long_prompt, "Say hello.")))
    base = ("run", "--backend", "fake", "--corpus", "jsonl", "--source", str(source), "-n", "8", "--quiet")
    castillo(*base, "--out", str(tmp_path / "a"))
    castillo(*base, "-B", "mean_tokens=40", "--out", str(tmp_path / "b"))
    report = tmp_path / "report"
    proc = castillo("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--html", str(report), env={"COLUMNS": "80"})
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80, proc.stdout
    assert "Describe in detail a very long" in proc.stdout and "…" in proc.stdout  # cut to the width
    wide = castillo("compare", str(tmp_path / "a"), str(tmp_path / "b")).stdout
    assert "[bold]List[float][/bold]" in wide  # printed as written, not read as markup

    page = (report / "compare.html").read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; [bold]" in page
    assert not re.search(r"<script|<a\b|\bsrc=|\bhref=|https?://", page, re.IGNORECASE)
    markdown = (report / "compare.md").read_text()
    assert "&lt;script&gt;" in markdown and "<script" not in markdown
    assert "\\| \\`code\\` \\*now\\* \\[link\\](javascript:x)" in markdown
    saved = json.loads((report / "compare.json").read_text())
    assert any(m["prompt_text"] == hostile for m in saved["cells"][0]["top_movers"])


def test_compare_is_a_plugin_command() -> None:
    assert " compare " in castillo("--help").stdout
    lean = castillo("--help", env={"CASTILLO_DISABLE_PLUGINS": "compare"})
    assert " compare " not in lean.stdout and " run " in lean.stdout
    assert "Examples:" in castillo("compare", "--help").stdout


def test_the_docs_show_what_the_command_prints(runs: dict[str, Path]) -> None:
    """docs/compare.md's sample is the output on A and B (the brief's two runs), from the cell on."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "compare.md").read_text(encoding="utf-8")
    start = docs.index("fake--model × Tiny")
    shown = docs[start : docs.index("\n```", start)].splitlines()
    out = castillo("compare", str(runs["A"]), str(runs["B"]), "--top", "3", env={"COLUMNS": "80"}).stdout
    printed = [line.rstrip() for line in out[out.index("fake--model × Tiny") :].splitlines()]
    assert printed == shown
