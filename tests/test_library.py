"""castillo from Python: run a grid and open a dataset in one call (the examples of castillo_core.library)."""

from __future__ import annotations

from pathlib import Path

import pytest

import castillo_core as castillo
from castillo_core import ConfigError, RunSummary


def test_run_from_python_with_the_clis_options(tmp_path: Path) -> None:
    out = tmp_path / "nb"
    summary = castillo.run(
        backend="fake",
        corpus=["tiny"],
        n=4,
        limit=5,
        out=str(out),
        metric=["length", "degeneration"],
        metric_options={"degeneration": {"window": 512}},
        backend_options={"mean_tokens": 20},
    )
    assert isinstance(summary, RunSummary) and summary.ok
    assert [c.written for c in summary.cells] == [5]
    data = castillo.open_dataset(out)
    prompts = data.to_pandas()
    assert len(prompts) == 5 and set(prompts["n_samples"]) == {4}
    assert prompts["output_mean"].max() <= 40, "backend_options reached the backend"
    (cell,) = data.manifest.cells.values()
    assert cell.metrics["degeneration"]["options"]["window"] == 512
    again = castillo.run(
        {"models": [{"backend": "fake"}], "corpora": [{"name": "tiny", "limit": 5}]},
        out=str(out),
        n=4,
        metric=["length", "degeneration"],
        metric_options={"degeneration": {"window": 512}},
        backend_options={"mean_tokens": 20},
    )
    assert [c.status for c in again.cells] == ["skipped"]


def test_open_dataset_with_responses_and_views(tmp_path: Path) -> None:
    out = tmp_path / "nb"
    castillo.run(backend="fake", corpus="tiny", n=3, limit=6, max_new_tokens=30, out=str(out))
    data = castillo.open_dataset(out)
    joined = data.prompts(with_responses=True, columns=["prompt_id", "output_sizes"])
    for sizes, responses in zip(joined["output_sizes"].to_pylist(), joined["responses"].to_pylist(), strict=True):
        assert [r["output_tokens"] for r in responses] == sizes
        assert [r["sample_index"] for r in responses] == [0, 1, 2]
    sanitized = data.prompts(view="sanitized")
    degenerate = data.prompts(view="degenerate", detector="v1-length")
    assert degenerate.num_rows >= 1, "a cap of 30 flags rows under v1's rule"
    assert sanitized.num_rows <= 6
    assert data.to_polars(view="degenerate").height == degenerate.num_rows
    assert data.summary()[0]["prompts"] == 6
    with pytest.raises(castillo.UnknownNameError, match="did you mean 'sanitized'"):
        data.prompts(view="sanitised")
    with pytest.raises(ConfigError, match="option detectr"):
        data.prompts(view="sanitized", detectr="x")


def test_run_refuses_what_the_cli_refuses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no corpus given"):
        castillo.run(backend="fake", out=str(tmp_path / "o"))
    with pytest.raises(castillo.StoreError, match="not a castillo output"):
        castillo.open_dataset(tmp_path / "nothing")
