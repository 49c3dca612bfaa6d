"""Every way a user reads a castillo dataset works: pandas, polars, DuckDB, pyarrow.dataset, `datasets`."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from castillo_core import read_table
from tests.helpers import castillo


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("readers") / "out"
    for corpus in ("tiny", "humaneval"):
        castillo(
            "run", "--backend", "fake", "--corpus", corpus, "--limit", "5", "-n", "3", "--quiet", "--out", str(out)
        )
    castillo(
        "run",
        "--backend",
        "fake",
        "--model",
        "other/model",
        "--corpus",
        "tiny",
        "--limit",
        "5",
        "-n",
        "3",
        "--quiet",
        "--out",
        str(out),
    )
    return out


def _expected(out: Path) -> tuple[int, set[tuple[str, str]]]:
    table = read_table(out, "prompts", columns=["model", "dataset"])
    pairs = set(zip(table.column("model").to_pylist(), table.column("dataset").to_pylist(), strict=True))
    return table.num_rows, pairs


def test_pandas(out: Path) -> None:
    import pandas as pd

    rows, pairs = _expected(out)
    prompts = pd.read_parquet(out / "prompts")
    assert len(prompts) == rows == 15
    assert set(zip(prompts["model"].astype(str), prompts["dataset"].astype(str), strict=True)) == pairs
    assert len(pd.read_parquet(out / "responses")) == rows * 3


def test_pyarrow_dataset(out: Path) -> None:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    rows, _ = _expected(out)
    for partitioning in (None, "hive"):
        assert ds.dataset(out / "prompts", format="parquet", partitioning=partitioning).count_rows() == rows
    assert pq.read_table(out / "prompts").num_rows == rows


@pytest.mark.skipif(importlib.util.find_spec("polars") is None, reason="polars is not installed")
def test_polars(out: Path) -> None:
    import polars as pl

    rows, pairs = _expected(out)
    prompts = pl.read_parquet(out / "prompts" / "**" / "*.parquet")
    assert prompts.height == rows
    assert set(zip(prompts["model"].to_list(), prompts["dataset"].to_list(), strict=True)) == pairs
    assert pl.scan_parquet(out / "responses").collect().height == rows * 3


@pytest.mark.skipif(importlib.util.find_spec("duckdb") is None, reason="duckdb is not installed")
def test_duckdb(out: Path) -> None:
    import duckdb

    rows, pairs = _expected(out)
    query = f"select model, dataset, count(*) from read_parquet('{out}/prompts/**/*.parquet') group by all"
    found = duckdb.sql(query).fetchall()
    assert {(m, d) for m, d, _ in found} == pairs and sum(n for *_, n in found) == rows


def test_hf_datasets(out: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows, pairs = _expected(out)
    loaded = datasets.load_dataset("parquet", data_files=str(out / "prompts" / "**" / "*.parquet"), split="train")
    assert loaded.num_rows == rows
    assert set(zip(loaded["model"], loaded["dataset"], strict=True)) == pairs


def test_old_hive_layout_is_moved_on_the_next_write(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "parts.jsonl").unlink()  # castillo 0.1 kept no ledger
    for table in ("prompts", "responses"):
        for model_dir in list((old / table).iterdir()):
            hive = old / table / f"model={model_dir.name}"
            model_dir.rename(hive)
            for dataset_dir in list(hive.iterdir()):
                dataset_dir.rename(hive / f"dataset={dataset_dir.name}")
    rows, _ = _expected(out)
    resumed = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--limit", "5", "-n", "3", "--quiet", "--out", str(old)
    )
    assert "skipped" in resumed.stdout and "new=0" in resumed.stdout
    assert not list(old.rglob("model=*"))
    assert read_table(old, "prompts").num_rows == rows
    assert castillo("verify", str(old)).returncode == 0
