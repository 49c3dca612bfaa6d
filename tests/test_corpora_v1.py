"""The corpora reproduce CASTILLO v1's prompts, checked against v1's published data.

Needs ../shared/data/castillo-v1 (skipped cleanly where it is absent). For each corpus
with a v1 split file, the test split's prompt ids must be exactly the prompt_ids of
v1's results for that dataset, except where v1 truncated a long prompt to 2,500 tokens
of a model's tokenizer: such a prompt's full-text id is missing from v1 when every model
truncated it, and each truncation adds an id of a shortened text. Both counts are
pinned per dataset, and every such id is checked to be a truncation.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from castillo_corpora.corpora import V1_CORPORA

from castillo_core import CorpusSelection, Prompt, Rejection

pytestmark = pytest.mark.shared

CORPUS_OF = {cls.dataset: cls for cls in V1_CORPORA}

# dataset -> (v1 test records, our ids absent from v1, v1 ids that are truncated texts)
EXPECTED = {
    "Alpaca": (200, 0, 0),
    "DollyDataset": (200, 0, 0),
    "ShareGPT": (200, 2, 18),
    "Mbpp": (98, 0, 0),
    "DS1000": (100, 0, 0),
    "BigCodeBench": (114, 0, 0),
}
TRUNCATED_TO = 2500  # v1's MAX_PROMTP_LEN, in tokens of each model's tokenizer


def shared_prefix(a: str, b: str) -> int:
    """How many leading characters two texts share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def v1_rows(root: Path, dataset: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted((root / "results" / "test").glob(f"preproc_{dataset}_test_*.json")):
        for row in json.loads(path.read_text()):
            rows[row["prompt_id"]].append(row)
    return rows


def load_test_split(root: Path, dataset: str) -> tuple[list[Prompt], list[Rejection]]:
    cls = CORPUS_OF[dataset]
    source = root / "corpora" / dataset
    items = list(cls(CorpusSelection(corpus=cls.name, source=str(source), split="test")).iter_prompts())
    return [i for i in items if isinstance(i, Prompt)], [i for i in items if isinstance(i, Rejection)]


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_test_split_prompt_ids_match_v1(shared_v1: Path, dataset: str) -> None:
    n_records, n_ours_missing, n_v1_truncated = EXPECTED[dataset]
    prompts, rejections = load_test_split(shared_v1, dataset)
    assert not rejections
    assert len(prompts) == n_records and {p.split for p in prompts} == {"test"}
    assert {p.dataset for p in prompts} == {dataset}
    rows = v1_rows(shared_v1, dataset)
    ours = {p.prompt_id: p for p in prompts}
    missing = [ours[i] for i in ours if i not in rows]
    truncated = [rows[i] for i in rows if i not in ours]
    assert (len(missing), len(truncated)) == (n_ours_missing, n_v1_truncated)
    # Every v1-only id is a truncated text: a prefix-sharing shortening of one of our
    # prompts, counted at the truncation length by v1.
    for variants in truncated:
        row = variants[0]
        assert row["input_size"] >= TRUNCATED_TO
        source = max(ours.values(), key=lambda p: shared_prefix(p.prompt_text, row["prompt_text"]))
        assert len(source.prompt_text) > len(row["prompt_text"])
        assert shared_prefix(source.prompt_text, row["prompt_text"]) >= 500
    # Every prompt of ours that v1 lacks was truncated for every model it ran on.
    for prompt in missing:
        assert any(shared_prefix(prompt.prompt_text, v[0]["prompt_text"]) >= 500 for v in truncated)
    if dataset == "DollyDataset":
        categories = {r[0]["prompt_id"]: r[0]["category"] for r in rows.values()}
        assert all(categories[p.prompt_id] == p.category for p in prompts)


def test_mbpp_native_file_reproduces_v1s_test_split(shared_v1: Path) -> None:
    """v1's selection recipe, run on the full mbpp.jsonl, selects v1's test records in v1's order."""
    source = shared_v1 / "corpora" / "Mbpp" / "mbpp.jsonl"
    if not source.is_file():
        pytest.skip("mbpp.jsonl is not in the shared data")
    cls = CORPUS_OF["Mbpp"]
    prompts = list(cls(CorpusSelection(corpus="mbpp", source=str(source), split="test")).iter_prompts())
    v1_test = json.loads((shared_v1 / "corpora" / "Mbpp" / "raw_Mbpp_test.json").read_text())
    assert [p.metadata["task_id"] for p in prompts] == [r["task_id"] for r in v1_test]
    assert {p.prompt_id for p in prompts} == set(v1_rows(shared_v1, "Mbpp"))
