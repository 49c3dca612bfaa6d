"""`castillo import castillo-v1 PATH OUT`: v1's published JSON into castillo's layout.

Unit tests write small v1 files here; the whole published test split is read only in
the `shared`-marked test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from castillo_core.api.ids import prompt_id, sample_id
from castillo_core.engine.dataset import read_table
from castillo_core.engine.schema import V1_COLUMNS, prompts_schema
from tests.helpers import castillo

MODEL = "meta-llama--Llama-3.2-1B-Instruct"


def v1_record(dataset: str, model: str, text: str, sizes: list[int], **extra: Any) -> dict[str, Any]:
    """A record as v1 wrote it: its ids, numpy statistics rounded to 2 decimals, its sampling."""
    array = np.array(sizes, dtype=float)
    percentiles = np.percentile(array, [25, 50, 75, 99])
    record = {
        "sample_id": sample_id(dataset, model, 50, 1.0, 1.0, text),
        "prompt_id": prompt_id(dataset, text),
        "model": model,
        "dataset": dataset,
        "prompt_text": text,
        "longest_response": f"longest answer to {text}",
        "shortest_response": f"short answer to {text}",
        "input_size": len(text.split()) + 10,
        "output_sizes": sizes,
        "output_mean": round(float(array.mean()), 2),
        "output_std": round(float(array.std()), 2),
        "output_percentiles": {f"p{q}": round(float(v), 2) for q, v in zip((25, 50, 75, 99), percentiles, strict=True)},
        "top_k": 50,
        "top_p": 1.0,
        "temp": 1.0,
        "category": "undefined",
        "gen_time": 12.5,
    }
    record.update(extra)
    return record


def write_v1(directory: Path, dataset: str, split: str, model: str, records: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"preproc_{dataset}_{split}_{model}.json"
    path.write_text(json.dumps(records))
    return path


def small_v1(directory: Path) -> Path:
    """Two files: a normal prompt, a capped one and an all-capped one; another dataset."""
    write_v1(
        directory,
        "Alpaca",
        "test",
        MODEL,
        [
            v1_record("Alpaca", MODEL, "Name three colours.", [20, 25, 22, 30, 21, 24, 23, 26, 27, 28]),
            v1_record("Alpaca", MODEL, "Write a long story.", [15001, 800, 900, 850, 870, 910, 880, 860, 840, 830]),
            v1_record("Alpaca", MODEL, "Loop forever.", [15001] * 10),
        ],
    )
    write_v1(
        directory,
        "Mbpp",
        "test",
        MODEL,
        [
            v1_record("Mbpp", MODEL, "Reverse a string in Python.", [60, 70, 65, 80, 75, 66, 71, 69, 72, 74]),
        ],
    )
    return directory


def test_import_writes_castillo_layout_with_v1_columns(tmp_path: Path) -> None:
    source, out = small_v1(tmp_path / "v1"), tmp_path / "out"
    result = castillo("import", "castillo-v1", str(source), str(out))
    assert "imported 4 row(s) from 2 file(s)" in result.stdout
    parts = sorted((out / "prompts").rglob("part-*.parquet"))
    assert [p.parent.relative_to(out / "prompts").as_posix() for p in parts] == [
        f"{MODEL}/Alpaca",
        f"{MODEL}/Mbpp",
    ]
    assert pq.read_schema(parts[0]).names == prompts_schema().names
    for part in (out / "responses").rglob("part-*.parquet"):
        assert pq.read_metadata(part).num_rows == 0  # v1 did not publish per-response rows
    prompts = read_table(out, "prompts").sort_by("prompt_text")
    original = {r["prompt_text"]: r for f in source.glob("*.json") for r in json.loads(f.read_text())}
    for row in prompts.to_pylist():
        record = original[row["prompt_text"]]
        assert {c: row[c] for c in V1_COLUMNS} == {c: record[c] for c in V1_COLUMNS}  # v1's values, untouched
        sizes = record["output_sizes"]
        assert row["split"] == "test" and row["backend"] == "transformers" and row["max_new_tokens"] == 15000
        assert row["n_samples"] == 10 and row["output_min"] == min(sizes) and row["output_max"] == max(sizes)
        assert row["n_length_capped"] == sum(s >= 14_999 for s in sizes)
        assert row["seed"] is None and row["finish_reasons"] is None  # v1 never recorded them: null, not guessed
        assert len(row["config_hash"]) == 16 and row["castillo_version"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c["dataset"] for c in manifest["cells"].values()} == {"Alpaca", "Mbpp"}
    shown = castillo("show", str(out), "--json")
    assert {r["dataset"] for r in json.loads(shown.stdout)} == {"Alpaca", "Mbpp"}


def test_import_twice_duplicates_nothing(tmp_path: Path) -> None:
    source, out = small_v1(tmp_path / "v1"), tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    again = castillo("import", "castillo-v1", str(source / f"preproc_Alpaca_test_{MODEL}.json"), str(out))
    assert "imported 0 row(s)" in again.stdout and "3 already present" in again.stdout
    assert read_table(out, "prompts").num_rows == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"rows": []}', "holds a JSON dict, not a list"),
        ("[42]", "record 0 is a JSON int"),
        (json.dumps([v1_record("Alpaca", MODEL, "ok", [1, 2])] * 1 + [{"prompt_id": "x"}]), "record 1 lacks column"),
        (
            json.dumps([v1_record("Alpaca", MODEL, "bad sizes", [3], output_sizes=[])]),
            "record 0: output_sizes must be a non-empty list",
        ),
        (json.dumps([v1_record("Alpaca", MODEL, "bad k", [3], top_k="fifty")]), "record 0: column top_k"),
    ],
)
def test_bad_files_name_the_file_and_record(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / f"preproc_Alpaca_test_{MODEL}.json"
    path.write_text(content)
    result = castillo("import", "castillo-v1", str(path), str(tmp_path / "out"), check=False)
    assert result.returncode == 2
    assert str(path) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").rglob("part-*.parquet"))  # nothing half-imported


def test_directory_without_v1_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = castillo("import", "castillo-v1", str(tmp_path / "empty"), str(tmp_path / "out"), check=False)
    assert result.returncode == 2 and "preproc_<Dataset>_<split>_<model>.json" in result.stderr


@pytest.mark.shared
def test_import_the_published_test_split(shared_v1: Path, tmp_path: Path) -> None:
    source = shared_v1 / "results" / "test"
    out = tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    prompts = read_table(out, "prompts")
    assert prompts.num_rows == 14_121
    assert len(list((out / "prompts").rglob("part-*.parquet"))) == 91
    assert set(prompts.column("split").to_pylist()) == {"test"}
    assert sum(prompts.column("n_length_capped").to_pylist()) >= 128
