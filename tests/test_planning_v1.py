"""Issue 12 acceptance on CASTILLO v1's real data: the v1 preset planned, prompts hashed to v1 ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import castillo

pytestmark = pytest.mark.shared

V1_NAMES = {
    "alpaca": "Alpaca",
    "dolly": "DollyDataset",
    "sharegpt": "ShareGPT",
    "mbpp": "Mbpp",
    "ds1000": "DS1000",
    "bigcodebench": "BigCodeBench",
}


def _v1_ids(shared: Path, dataset: str) -> set[str]:
    ids: set[str] = set()
    for path in (shared / "results" / "test").glob(f"preproc_{dataset}_test_*.json"):
        ids.update(row["prompt_id"] for row in json.loads(path.read_text()))
    return ids


def test_v1_preset_dry_run_plans_13_x_6_cells_with_an_estimate(shared_v1: Path, tmp_path: Path) -> None:
    imported = tmp_path / "v1"
    castillo("import", "castillo-v1", str(shared_v1 / "results" / "test"), str(imported))
    corpora = shared_v1 / "corpora"
    backends = {r["name"] for r in json.loads(castillo("list", "backends", "--json").stdout)}
    backend = "vllm" if "vllm" in backends else "fake"
    proc = castillo(
        "run",
        "--preset",
        "castillo-v1",
        "--backend",
        backend,
        "--dry-run",
        "--log-json",
        "--source",
        str(corpora),
        "--split",
        "test",
        "--estimate-from",
        str(imported),
        "--tokens-per-second",
        "2000",
        "--out",
        str(tmp_path / "planned"),
    )
    cells = json.loads(proc.stdout)["cells"]
    assert len(cells) == 13 * 7
    runnable = [c for c in cells if not c.get("error")]
    apps = [c for c in cells if c["dataset"] == "Apps"]
    assert len(runnable) == 13 * 6
    assert len(apps) == 13 and all("raw_Apps_test.json" in c["error"] for c in apps)
    for cell in runnable:
        records = json.loads((corpora / cell["dataset"] / f"raw_{cell['dataset']}_test.json").read_text())
        # v1's test files hold each prompt once, except ShareGPT (one text three times, merged)
        distinct = len(records) - (2 if cell["dataset"] == "ShareGPT" else 0)
        assert cell["prompts"] == distinct, cell
        assert cell["estimate_basis"] == "model x dataset"
        assert cell["expected_tokens"] > 0 and cell["expected_seconds"] > 0
    assert not (tmp_path / "planned").exists()
    table = castillo(
        "run",
        "--preset",
        "castillo-v1",
        "--backend",
        backend,
        "--dry-run",
        "--source",
        str(corpora),
        "--split",
        "test",
        "--out",
        str(tmp_path / "planned"),
    ).stdout
    assert "Apps (13 models): not runnable" in table


@pytest.mark.parametrize("corpus", sorted(V1_NAMES))
def test_prompts_command_hashes_to_v1_prompt_ids(shared_v1: Path, corpus: str) -> None:
    dataset = V1_NAMES[corpus]
    source = shared_v1 / "corpora" / dataset
    lines = castillo("prompts", "--corpus", corpus, "--source", str(source), "--split", "test", "--json").stdout
    ours = {json.loads(line)["prompt_id"] for line in lines.splitlines()}
    v1 = _v1_ids(shared_v1, dataset)
    # v1 truncated a few long ShareGPT prompts to 2,500 tokens, which changed their ids
    assert len(ours - v1) == (2 if corpus == "sharegpt" else 0)
    assert len(ours & v1) == len(ours) - (2 if corpus == "sharegpt" else 0)
