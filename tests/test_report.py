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
DISTRIBUTIONS = {"lengths_box.png", "cv_box.png", "prompt_lengths.png", "input_vs_output.png"}
LINE_FIGURES = {"overview_bars.png", *DISTRIBUTIONS}
SINGLE_FIGURES = {"lengths_hist.png", "prompt_lengths.png", "input_vs_output.png"}
NUMBER = re.compile(r"^-?[\d,]*\.?\d+(k|%)?$")
PERCENT = re.compile(r"^(\d+\.\d%|<0\.1%)$")


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


def _jsonl_run(out: Path, tmp: Path, dataset: str, *extra: str) -> None:
    """A run of the fake backend on a small jsonl corpus stored as ``dataset``."""
    source = tmp / f"{dataset}.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"{dataset} task {i} " + "word " * i}) + "\n" for i in range(9)))
    castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "jsonl",
        "--source",
        str(source),
        "-C",
        f"dataset={dataset}",
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


def _figures(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["file"]: f for f in summary["figures"]}


def _numbers(labels: list[str]) -> list[str]:
    return [label for label in labels if NUMBER.match(label)]


def _assert_axis_numbers(summary: dict[str, Any]) -> None:
    """Every panel shows the numbers of its value axes (both axes of a scatter or a histogram)."""
    for figure in summary["figures"]:
        for panel in figure["panels"]:
            where = f"{figure['file']} / {panel['title']}"
            if figure["file"].startswith("heatmap_"):  # names on both axes; the numbers are on the colour bar
                if panel["title"] == "colour bar":
                    assert len(_numbers(panel["y"])) >= 2, where
                continue
            assert len(_numbers(panel["x"])) >= 2, (where, panel["x"])
            if figure["file"] in ("input_vs_output.png", "lengths_hist.png"):
                assert len(_numbers(panel["y"])) >= 2, (where, panel["y"])


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
    assert sorted(sources) == sorted(p.name for p in report.glob("*.png"))
    assert set(sources) == LINE_FIGURES  # two models, one dataset: bars, not heatmaps one cell wide
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
    # v1 recorded no finish reasons, prompt cap or truncation: "not recorded", never a made-up 0
    for cell in cells.values():
        assert {"finish_reasons", "max_prompt_tokens", "prompt_truncated"} <= set(cell["not_recorded"])
        assert cell["truncated"] is None and cell["max_prompt_tokens"] is None and cell["max_new_tokens"] == "15,000"
    assert cells["Alpaca"]["gen_time"] == pytest.approx(3 * 12.5)  # v1 did record gen_time
    page = (tmp_path / "report" / "index.html").read_text()
    recorded = page.split("<h2>Settings and what was recorded</h2>")[1].split("<h2>")[0]
    assert recorded.count('<td class="missing">not recorded</td>') == 2 * 3  # prompt cap, truncated, finish reasons
    assert "capped counted from" in recorded and "lengths &gt;= cap - 1 (v1&#x27;s rule)" in recorded
    assert "not recorded (the dataset holds no truncation flags)" in page
    provenance = page.split("<h2>Provenance</h2>")[1].split("<h2>")[0]
    assert '<td class="missing">not recorded</td>' in provenance  # no revision in v1's files
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| not recorded | not recorded |" in markdown


def test_a_field_an_import_lacks_reads_not_recorded(tmp_path: Path) -> None:
    from tests.test_v1_import import v1_record, write_v1

    record = v1_record("Alpaca", "org--m-1B", "Say hi.", [3, 4, 5])
    record["gen_time"] = None
    write_v1(tmp_path / "v1", "Alpaca", "test", "org--m-1B", [record])
    castillo("import", "castillo-v1", str(tmp_path / "v1"), str(tmp_path / "out"))
    castillo("report", str(tmp_path / "out"), "--quiet")
    cell = _summary(tmp_path / "out" / "report")["cells"][0]
    assert cell["gen_time"] is None and "gen_time" in cell["not_recorded"]
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    recorded = page.split("<h2>Settings and what was recorded</h2>")[1].split("<h2>")[0]
    assert recorded.count('<td class="missing">not recorded</td>') == 4  # + generation time


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models x two datasets with a cap of 100 (v1's length rule flags what reached it), reported."""
    tmp = tmp_path_factory.mktemp("grid")
    out = tmp / "out"
    for model in ("org/M-3B-Instruct", "org/M-1B-Instruct"):
        _run(out, "--model", model)
        _jsonl_run(out, tmp, "Code", "--model", model, "-B", "mean_tokens=40")
    castillo("report", str(out), "--quiet")
    return out


def test_a_grid_gets_heatmaps_with_original_and_sanitized_side_by_side(grid: Path) -> None:
    from castillo_core import open_dataset

    summary = _summary(grid / "report")
    figures = _figures(summary)
    heatmaps = {f for f in figures if f.startswith("heatmap_")}
    assert set(figures) == heatmaps | DISTRIBUTIONS and summary["shape"] == "grid"
    assert heatmaps >= {"heatmap_mean_length.png", "heatmap_share_capped.png", "heatmap_degeneration_v1-length.png"}
    _assert_axis_numbers(summary)
    # the sanitized view's numbers are the registered `sanitized` view's (castillo sanitize)
    view = open_dataset(grid).prompts(view="sanitized").to_pylist()
    assert 0 < len(view) <= summary["rows"]
    for cell in summary["cells"]:
        rows = [r for r in view if (r["model"], r["dataset"]) == (cell["model"], cell["dataset"])]
        assert cell["sanitized_prompts"] == len(rows)
        assert cell["sanitized_mean_length"] == pytest.approx(np.mean([r["output_mean"] for r in rows]), rel=1e-12)
        assert cell["sanitized_mean_std"] == pytest.approx(np.mean([r["output_std"] for r in rows]), rel=1e-12)
        capped = sum(r["n_length_capped"] for r in rows) / sum(r["n_samples"] for r in rows)
        assert cell["sanitized_share_capped"] == pytest.approx(capped)
    changed = [c for c in summary["cells"] if c["sanitized_mean_length"] != c["mean_length"]]
    assert changed  # the cap of 100 is reached: the two views differ
    pair = figures["heatmap_mean_length.png"]["panels"]
    assert [p["title"] for p in pair] == ["original", "sanitized (v1-length)", "colour bar"]
    models = summary["models"]
    sanitized = {(c["model"], c["dataset"]): f"{c['sanitized_mean_length']:,.0f}" for c in summary["cells"]}
    assert pair[1]["values"] == [sanitized[(m, d)] for m in models for d in summary["datasets"]]
    page = (grid / "report" / "index.html").read_text()
    assert "<h2>Original and sanitized</h2>" in page and "mean length, sanitized" in page
    assert "made for v1&#x27;s cap of 15,000; this dataset&#x27;s cap is 100" in page  # the rule means little here


def test_percentages_read_alike_in_cells_tables_and_colour_bars(grid: Path) -> None:
    from castillo_report.labels import percent

    summary = _summary(grid / "report")
    for file in ("heatmap_share_capped.png", "heatmap_degeneration_v1-length.png"):
        cells, bar = _figures(summary)[file]["panels"]
        assert cells["values"] and all(PERCENT.match(v) for v in cells["values"]), cells["values"]
        assert len(bar["y"]) >= 2 and all(PERCENT.match(v) for v in bar["y"]), bar["y"]
    page = (grid / "report" / "index.html").read_text()
    for cell in summary["cells"]:
        assert f'<td class="n">{percent(cell["share_capped"])}</td>' in page
        assert percent(cell["share_capped"]) in _figures(summary)["heatmap_share_capped.png"]["panels"][0]["values"]


def test_models_are_labelled_short_and_ordered_by_family_and_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    models = [
        "meta-llama/Llama-3.2-3B-Instruct",
        "Qwen/Qwen2.5-14B-Instruct",
        "meta-llama/Llama-3.1-70B-Instruct",
        "google/gemma-3-12b-it",
        "meta-llama/Llama-3.2-1B-Instruct",
        "google/gemma-3-4b-it",
        "Qwen/Qwen2.5-7B-Instruct-1M",
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
    ]
    _run(out, *(a for m in models for a in ("--model", m)), "-C", "size=3")
    castillo("report", str(out), "--quiet")
    summary = _summary(out / "report")
    labels = [summary["labels"][m] for m in summary["models"]]
    assert labels == [
        "gemma-3-4b",
        "gemma-3-12b",
        "Llama-3.2-1B",
        "Llama-3.2-3B",
        "Llama-3.1-70B",
        "Mixtral-8x7B-v0.1",
        "Qwen2.5-7B-1M",
        "Qwen2.5-14B",
    ]
    assert summary["models"][2] == "meta-llama--Llama-3.2-1B-Instruct"
    figures = _figures(summary)
    assert figures["overview_bars.png"]["panels"][0]["y"] == labels  # one dataset: a bar per model, in order
    assert figures["lengths_box.png"]["panels"][0]["y"] == labels
    assert [p["title"] for p in figures["input_vs_output.png"]["panels"]] == labels
    assert [c["model"] for c in summary["cells"]] == summary["models"]  # tables in the same order, full ids
    page = (out / "report" / "index.html").read_text()
    assert "<td>Llama-3.2-1B</td><td>meta-llama--Llama-3.2-1B-Instruct</td>" in page  # the label -> id table


def test_one_model_and_one_dataset_get_distributions_not_a_heatmap(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out)
    castillo("report", str(out), "--quiet")
    summary = _summary(out / "report")
    assert summary["shape"] == "single" and set(_figures(summary)) == SINGLE_FIGURES
    _assert_axis_numbers(summary)
    histograms = _figures(summary)["lengths_hist.png"]["panels"]
    assert [p["title"] for p in histograms] == ["Response lengths", "Per-prompt coefficient of variation"]
    strips = _figures(summary)["prompt_lengths.png"]["panels"]
    assert len(strips) == 1 and len(strips[0]["y"]) == 12  # every prompt's N lengths, one row each
    page = (out / "report" / "index.html").read_text()
    headline = page.split("<h2>Overview</h2>")[1].split("<h2>")[0]
    cell = summary["cells"][0]
    assert f'<td class="n">{cell["mean_length"]:.1f}</td>' in headline and "mean length (tokens)" in headline
    assert f'<td class="n">{cell["prompts"]}</td>' in headline


def test_one_model_over_datasets_gets_bars_by_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out)
    _jsonl_run(out, tmp_path, "Code", "-B", "mean_tokens=20")
    _jsonl_run(out, tmp_path, "Chat", "-B", "mean_tokens=50")
    castillo("report", str(out), "--quiet")
    summary = _summary(out / "report")
    figures = _figures(summary)
    assert summary["shape"] == "line" and set(figures) == LINE_FIGURES
    _assert_axis_numbers(summary)
    bars = figures["overview_bars.png"]["panels"]
    assert bars[0]["title"] == "Mean response length (tokens)" and bars[0]["y"] == ["Chat", "Code", "Tiny"]
    means = {c["dataset"]: c for c in summary["cells"]}
    expected = [f"{means[d][k]:,.0f}" for d in ("Chat", "Code", "Tiny") for k in ("mean_length",)]
    assert [v.strip() for v in bars[0]["values"][:3]] == expected  # original bars first, then sanitized
    assert all(PERCENT.match(v.strip()) for v in bars[3]["values"]), bars[3]  # capped share, as in the table
    assert figures["lengths_box.png"]["panels"][0]["y"] == ["Chat", "Code", "Tiny"]  # one panel, a box per dataset


def test_example_texts_are_shown_escaped_and_cut(tmp_path: Path) -> None:
    from tests.test_v1_import import v1_record, write_v1

    hostile = "<script>alert('x')</script> & <b>bold</b>\x00"
    records = [
        v1_record("Alpaca", "org--m-1B", "Say <hi>.", [3, 40, 50], shortest_response=hostile),
        v1_record("Alpaca", "org--m-1B", "Write a lot.", [90, 900, 20], longest_response="long " * 1000),
    ]
    write_v1(tmp_path / "v1", "Alpaca", "test", "org--m-1B", records)
    castillo("import", "castillo-v1", str(tmp_path / "v1"), str(tmp_path / "out"))
    castillo("report", str(tmp_path / "out"), "--quiet")
    summary = _summary(tmp_path / "out" / "report")
    examples = {e["kind"]: e for e in summary["examples"]}
    assert examples["shortest"]["tokens"] == 3 and examples["shortest"]["prompt"] == "Say <hi>."
    assert examples["shortest"]["text"].startswith("<script>alert('x')</script> & <b>bold</b>")
    assert examples["longest"]["tokens"] == 900 and examples["longest"]["text_chars"] == 5000
    assert len(examples["longest"]["text"]) == 1200
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "<script" not in page and "<b>bold" not in page and "\x00" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "Say &lt;hi&gt;." in page and "(3,800 more characters)" in page


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


def test_hostile_model_dataset_and_detector_names_in_a_grid_are_text_and_safe_file_names(tmp_path: Path) -> None:
    """A grid draws heatmaps, whose file names hold the detector's name: a name from the data."""
    import pyarrow as pa

    from castillo_core import Store, responses_schema
    from tests.test_v1_import import v1_record, write_v1

    models, datasets = ["org--$x^$ <b>7B</b>", "org/a\x07b-1B"], ["../../Alpaca", "Mbpp $"]
    for m in range(2):
        for d in range(2):  # plain names for the import (it refuses these), the hostile ones written below
            records = [v1_record(f"D{d}", f"m{m}", f"{d} {i}", [10 + i, 20 * (m + 1), 15001]) for i in range(2)]
            write_v1(tmp_path / "v1", f"D{d}", "test", f"m{m}", records)
    castillo("import", "castillo-v1", str(tmp_path / "v1"), str(tmp_path / "scratch"))
    table = read_table(tmp_path / "scratch", "prompts")
    for column, names in (("model", models), ("dataset", datasets)):
        values = [names[int(v[1:])] for v in table.column(column).to_pylist()]
        table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    detector = "../../$x^$ | evil\x00"
    meta = {b"castillo.role": b"flag_count", b"castillo.detector": detector.encode()}
    table = table.append_column(pa.field("n_hostile", pa.int64(), metadata=meta), pa.array([1, 0] * 4))
    out = tmp_path / "out"
    store = Store(out)
    store.open()
    for index, config_hash in enumerate(sorted(set(table.column("config_hash").to_pylist()))):
        part = table.filter(pa.compute.equal(table.column("config_hash"), config_hash))
        empty = responses_schema().empty_table()
        store.write_part(f"m{index}", f"d{index}", config_hash, part, empty, {"config_hash": config_hash})
    castillo("report", str(out), "--quiet")
    report = out / "report"
    summary = _summary(report)
    assert summary["shape"] == "grid" and sorted(summary["models"]) == sorted(models)
    pngs = {p.name for p in report.iterdir() if p.suffix == ".png"}
    assert {f["file"] for f in summary["figures"]} == pngs and len([p for p in pngs if "degeneration" in p]) == 2
    assert all(len(name.encode()) < 120 and re.fullmatch(r"[\w.+=@,~-]+", name) for name in pngs)
    assert all(c["degeneration_" + detector] == 0.5 for c in summary["cells"])
    page = (report / "index.html").read_text()
    assert "<b>7B" not in page and "&lt;b&gt;7B&lt;/b&gt;" in page and "\x00" not in page and "\x07" not in page
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(pngs)
    _assert_axis_numbers(summary)


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
    # the sanitized view: the registered view's numbers, for every cell
    from castillo_core import open_dataset

    columns = ["model", "dataset", "output_mean"]
    sanitized: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in open_dataset(out).prompts(view="sanitized", columns=columns).to_pylist():
        sanitized[(row["model"], row["dataset"])].append(row["output_mean"])
    for key, means in sanitized.items():
        assert cells[key]["sanitized_prompts"] == len(means)
        assert cells[key]["sanitized_mean_length"] == pytest.approx(float(np.mean(means)), rel=1e-12), key
    assert sum(len(m) for m in sanitized.values()) == sum(c["sanitized_prompts"] for c in cells.values())
    # labels short, families together, sizes ascending
    labels = [summary["labels"][m] for m in summary["models"]]
    assert labels[:6] == ["gemma-3-4b", "gemma-3-12b", "Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B", "Llama-3.3-70B"]
    assert labels[-3:] == ["Qwen2.5-7B-1M", "Qwen2.5-14B", "Qwen2.5-32B"]
    _assert_axis_numbers(summary)
    examples = summary["examples"]
    assert len(examples) == 2 * 91 and all(e["text"] is not None for e in examples)  # a 1-token answer may be ""
    markdown = (tmp_path / "report" / "report.md").read_text()
    cell = cells[("google--gemma-3-4b-it", "ShareGPT")]
    assert f"| google--gemma-3-4b-it | ShareGPT | {cell['prompts']} |" in markdown
    assert f"{cell['mean_length']:.1f}" in markdown
