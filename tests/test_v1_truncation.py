"""``--truncation v1``: CASTILLO v1's cut of long raw prompts, with the real Llama-3 tokenizer and tiny models.

v1 cut a raw prompt over 2,500 ids of the model's tokenizer to the decoding of its first
2,500 ids, hashed its ids over the cut text and templated it afterwards. The integration
tests build Meta's Llama-3 tokenizer offline (tests/fixtures/llama3_tokenizer.py, from the
``llama-models`` package) and check castillo against every Llama row of v1's published test
split; the tiny-model tests check the run itself (stored text, ids, flag, resume) on the
transformers and llama.cpp backends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from castillo_core import ConfigError, Prompt, cut_with_tokenizer, prompt_id, render_with_tokenizer
from castillo_core.api.rendering import SOURCE_PROMPT_ID, v1_cut_prompt
from castillo_core.engine.dataset import read_table
from castillo_core.engine.manifest import read_manifest
from tests.fixtures.llama3_tokenizer import cached_llama3, cached_tiny_llama3
from tests.fixtures.tiny_hf import cached_tiny_hf
from tests.helpers import castillo

LLAMAS = (
    "meta-llama--Llama-3.1-8B-Instruct",
    "meta-llama--Llama-3.2-1B-Instruct",
    "meta-llama--Llama-3.2-3B-Instruct",
    "meta-llama--Llama-3.3-70B-Instruct",
)
RAW = ("Alpaca", "DollyDataset", "ShareGPT", "Mbpp", "DS1000", "BigCodeBench")  # v1's kept raw test files
CAP = 2500
UNCAPPED = 2**31 - 1


@pytest.fixture(scope="session")
def llama3_cache(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("tiktoken", reason="pip install llama-models (brings tiktoken)")
    return Path(request.config.cache.mkdir("castillo-llama3"))


@pytest.fixture(scope="session")
def llama3(llama3_cache: Path) -> Any:
    from transformers import AutoTokenizer

    path = cached_llama3(llama3_cache)
    if path is None:
        pytest.skip("pip install llama-models (Meta's Llama-3 tokenizer.model)")
    return AutoTokenizer.from_pretrained(path)


def _v1_rows(shared: Path, dataset: str = "*", model: str = "*") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((shared / "results" / "test").glob(f"preproc_{dataset}_test_{model}.json")):
        rows.extend(json.loads(path.read_text()))
    return rows


# -- the real Llama-3 tokenizer against v1's data ---------------------------------------------------


def test_the_fixture_is_the_llama3_tokenizer(llama3: Any) -> None:
    assert len(llama3) == 128_256 and llama3.bos_token_id == 128_000 and llama3.eos_token_id == 128_009
    assert llama3("Hello world")["input_ids"] == [128_000, 9906, 1917]  # BOS added, as tokenizer(text) did in v1
    text = llama3.apply_chat_template([{"role": "user", "content": " Hi "}], tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge")
    assert text.endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.shared
@pytest.mark.slow  # seconds: 4,440 prompts rendered
def test_rendering_gives_v1s_input_size_for_every_llama_row(shared_v1: Path, llama3: Any) -> None:
    rows = [r for model in LLAMAS for r in _v1_rows(shared_v1, model=model)]
    assert len(rows) == 4 * 1110
    prompts = [Prompt(dataset=r["dataset"], prompt_text=r["prompt_text"]) for r in rows]
    rendered = render_with_tokenizer(llama3, prompts, UNCAPPED)  # v1 never capped the templated prompt
    assert [r.input_size for r in rendered] == [r["input_size"] for r in rows]
    assert max(r["input_size"] for r in rows) == 2534  # the cut ShareGPT prompts, templated
    assert all(p.prompt_id == r["prompt_id"] for p, r in zip(prompts, rows, strict=True))


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("dataset", RAW)
def test_v1_cut_gives_v1s_ids_and_sizes_from_the_raw_corpora(shared_v1: Path, llama3: Any, dataset: str) -> None:
    from tests.test_corpora_v1 import load_test_split

    prompts, _ = load_test_split(shared_v1, dataset)
    cuts = cut_with_tokenizer(llama3, [p.prompt_text for p in prompts], CAP)
    ours = [p if text is None else v1_cut_prompt(p, text) for p, text in zip(prompts, cuts, strict=True)]
    sizes = {
        p.prompt_id: r.input_size for p, r in zip(ours, render_with_tokenizer(llama3, ours, UNCAPPED), strict=True)
    }
    for model in LLAMAS:
        v1 = {r["prompt_id"]: r for r in _v1_rows(shared_v1, dataset, model)}
        assert set(sizes) == set(v1), model  # every v1 id produced, no other
        assert {i: v1[i]["input_size"] for i in v1} == sizes, model
        assert all(v1[p.prompt_id]["prompt_text"] == p.prompt_text for p in ours)
    cut = [p for p in ours if SOURCE_PROMPT_ID in p.metadata]
    assert len(cut) == (2 if dataset == "ShareGPT" else 0)
    assert sorted(sizes[p.prompt_id] for p in cut) == ([2532, 2534] if cut else [])


def test_a_cut_text_is_decoded_as_transformers_4_did(llama3: Any) -> None:
    text = "Take this , and that . " * 800  # far over the cap; decode leaves " ," and " ." for clean-up
    (cut,) = cut_with_tokenizer(llama3, [text], 100)
    assert (
        cut is not None
        and " ," not in cut
        and " ." not in cut
        and text.replace(" ,", ",").replace(" .", ".").startswith(cut)
    )
    assert len(llama3(cut)["input_ids"]) <= 100
    assert cut_with_tokenizer(llama3, ["short"], 100) == [None]


@pytest.mark.shared
@pytest.mark.slow  # about half a minute: 198 prompts of up to 2,534 tokens through a tiny Llama
def test_a_v1_truncation_run_stores_v1s_sharegpt_rows(shared_v1: Path, llama3_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("castillo_transformers")
    model = cached_tiny_llama3(llama3_cache)
    out = tmp_path / "out"
    args = (
        "run", "--backend", "transformers", "--model", str(model), "-B", "name=meta-llama/Llama-3.1-8B-Instruct",
        "-B", "threads=2", "--corpus", "sharegpt", "--source", str(shared_v1 / "corpora" / "ShareGPT"),
        "--split", "test", "-n", "1", "--max-new-tokens", "1", "--top-k", "50", "--top-p", "0.9",
        "--temperature", "0.6", "--truncation", "v1", "--out", str(out), "--quiet",
    )  # fmt: skip
    castillo(*args)
    stored = read_table(out, "prompts").to_pylist()
    v1 = {r["sample_id"]: r for r in _v1_rows(shared_v1, "ShareGPT", LLAMAS[0])}
    assert len(stored) == len(v1) == 198
    for row in stored:
        want = v1[row["sample_id"]]  # v1's sample id: the cut text and v1's sampling values
        assert (row["prompt_id"], row["prompt_text"], row["input_size"]) == (
            want["prompt_id"],
            want["prompt_text"],
            want["input_size"],
        )
    cut = [r for r in stored if r["prompt_truncated"]]
    assert sorted(r["input_size"] for r in cut) == [2532, 2534]
    assert all(r["source_prompt_id"] and r["source_prompt_id"] != r["prompt_id"] for r in cut)
    assert all(r["source_prompt_id"] is None for r in stored if not r["prompt_truncated"])
    again = castillo(*args)
    assert "skipped" in again.stdout and "new=0" in again.stdout  # the cut prompts are done, by their source ids


# -- tiny models: the run itself --------------------------------------------------------------------


def _long_prompts(path: Path) -> Path:
    texts = ["Why is the sky blue? " * 12, "Short question.", "The quick brown fox jumps over the lazy dog. " * 9]
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return path


def _run(model: str, backend: str, source: Path, out: Path, *extra: str) -> Any:
    return castillo(
        "run", "--backend", backend, "--model", model, "--corpus", "jsonl", "--source", str(source), "-n", "2",
        "--max-new-tokens", "6", "--max-prompt-tokens", "20", "--out", str(out), "--quiet", *extra,
    )  # fmt: skip


def _check_v1_rows(out: Path, source: Path, expected: dict[str, str]) -> list[dict[str, Any]]:
    """The stored rows of a v1 run: the cut text, v1's id over it, the source id, the flag, the sample ids."""
    texts = [json.loads(line)["prompt"] for line in source.read_text().splitlines()]
    rows = read_table(out, "prompts").to_pylist()
    assert len(rows) == len(texts)
    by_source = {r["source_prompt_id"] or r["prompt_id"]: r for r in rows}
    for text in texts:
        row = by_source[prompt_id("q", text)]
        if text in expected:
            assert row["prompt_truncated"] is True and row["prompt_text"] == expected[text]
            assert row["prompt_id"] == prompt_id("q", expected[text]) and row["source_prompt_id"] == prompt_id(
                "q", text
            )
        else:
            assert row["prompt_truncated"] is False and row["prompt_text"] == text and row["source_prompt_id"] is None
    responses = read_table(out, "responses").to_pylist()
    assert {r["prompt_id"] for r in responses} == {r["prompt_id"] for r in rows}
    assert {r["sample_id"] for r in responses} == {r["sample_id"] for r in rows}
    return rows


def test_a_v1_truncation_run_of_a_tiny_hf_model(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    pytest.importorskip("castillo_transformers")
    from transformers import AutoTokenizer

    model = cached_tiny_hf(Path(request.config.cache.mkdir("castillo-tiny-hf")), stop_logit=6.0)
    source = _long_prompts(tmp_path / "q.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(model)
    expected = {}
    for line in source.read_text().splitlines():
        text = json.loads(line)["prompt"]
        ids = tokenizer(text)["input_ids"]  # v1: the tokenizer's own special tokens count (this one adds BOS)
        if len(ids) > 20:
            expected[text] = tokenizer.decode(ids[:20], skip_special_tokens=True)
    assert len(expected) == 2
    out = tmp_path / "out"
    _run(str(model), "transformers", source, out, "--truncation", "v1", "-B", "threads=1")
    rows = _check_v1_rows(out, source, expected)
    # v1 templated the cut text uncapped: the template's tokens come on top of the cap
    template = len(render_with_tokenizer(tokenizer, [Prompt(dataset="q", prompt_text="")], UNCAPPED)[0].payload)
    assert all(r["input_size"] > 20 for r in rows if r["prompt_truncated"]) and template > 1
    (cell,) = read_manifest(out).cells.values()
    assert cell.config["generation"]["truncation"] == "v1"

    listed = castillo(
        "prompts", "--corpus", "jsonl", "--source", str(source), "--tokenizer", str(model),
        "--max-prompt-tokens", "20", "--truncation", "v1", "--json",
    )  # fmt: skip
    shown = [json.loads(line) for line in listed.stdout.splitlines()]
    stored = {r["prompt_id"]: r for r in rows}
    assert {p["prompt_id"] for p in shown} == set(stored)  # the ids a run stores, before any model runs
    for p in shown:
        row = stored[p["prompt_id"]]
        assert (p["prompt_text"], p["input_size"], p["prompt_truncated"], p["source_prompt_id"]) == (
            row["prompt_text"],
            row["input_size"],
            row["prompt_truncated"],
            row["source_prompt_id"],
        )

    again = _run(str(model), "transformers", source, out, "--truncation", "v1", "-B", "threads=1")
    assert "skipped" in again.stdout and "new=0" in again.stdout
    other = _run(str(model), "transformers", source, tmp_path / "template", "-B", "threads=1")
    assert "new=3" in other.stdout
    kept = read_table(tmp_path / "template", "prompts").to_pylist()
    assert all(r["source_prompt_id"] is None and r["input_size"] <= 20 for r in kept)  # castillo's own truncation
    assert sum(r["prompt_truncated"] for r in kept) == 2


def test_a_v1_truncation_run_of_a_tiny_gguf_model(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    pytest.importorskip("castillo_llamacpp")
    pytest.importorskip("llama_cpp")
    from tests.fixtures.tiny_gguf import cached_tiny_gguf

    model = cached_tiny_gguf(Path(request.config.cache.mkdir("castillo-tiny-gguf")), add_bos=True)
    source = _long_prompts(tmp_path / "q.jsonl")
    out = tmp_path / "out"
    _run(str(model), "llamacpp", source, out, "--truncation", "v1")
    rows = read_table(out, "prompts").to_pylist()
    cut = {r["source_prompt_id"]: r for r in rows if r["prompt_truncated"]}
    texts = [json.loads(line)["prompt"] for line in source.read_text().splitlines()]
    assert set(cut) == {prompt_id("q", t) for t in texts if t != "Short question."}
    from castillo_llamacpp import _llama

    vocab = _llama.Model(model, n_gpu_layers=0)  # the GGUF's own tokenizer, as the backend reads it
    try:
        expected = {}
        for text in texts:
            ids = [vocab.bos, *vocab.tokenize(text)]  # this GGUF adds BOS
            if len(ids) > 20:
                expected[text] = vocab.detokenize(ids[:20])
    finally:
        vocab.close()
    _check_v1_rows(out, source, expected)
    assert all(text.startswith(cut_text.rstrip()) for text, cut_text in expected.items())
    again = _run(str(model), "llamacpp", source, out, "--truncation", "v1")
    assert "skipped" in again.stdout and "new=0" in again.stdout


# -- the mode's edges ---------------------------------------------------------------------------------


def test_a_backend_that_cannot_cut_is_refused_with_the_way_out(tmp_path: Path) -> None:
    refused = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--out", str(tmp_path / "out"), "--quiet", "--truncation", "v1",
        check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "backend fake cannot cut prompts" in refused.stderr and "--truncation template" in refused.stderr
    counted = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--out", str(tmp_path / "c"), "--quiet", "--counting", "v1",
        check=False,
    )  # fmt: skip
    assert counted.returncode == 2 and "--counting exact" in counted.stderr


def test_the_default_modes_leave_existing_config_hashes_alone(tmp_path: Path) -> None:
    castillo("run", "--backend", "fake", "--corpus", "tiny", "--out", str(tmp_path / "a"), "--quiet", "-n", "2")
    (cell,) = read_manifest(tmp_path / "a").cells.values()
    assert "truncation" not in cell.config["generation"] and "counting" not in cell.config["generation"]
    explicit = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--out", str(tmp_path / "a"), "--quiet", "-n", "2",
        "--truncation", "template", "--counting", "exact",
    )  # fmt: skip
    assert "skipped" in explicit.stdout  # the same cell: the defaults spelled out change nothing


def test_a_conversation_is_not_cut_as_v1_never_ran_one() -> None:
    single = Prompt(dataset="d", prompt_text="abc", messages=({"role": "user", "content": "abc"},))
    cut = v1_cut_prompt(single, "ab")
    assert cut.prompt_id == prompt_id("d", "ab") and cut.chat_messages() == [{"role": "user", "content": "ab"}]
    assert cut.metadata[SOURCE_PROMPT_ID] == single.prompt_id
    chat = Prompt(
        dataset="d",
        prompt_id="0123456789abcdef",
        prompt_text="abc",
        messages=(
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y"},
            {"role": "user", "content": "abc"},
        ),
    )
    with pytest.raises(ConfigError, match="--truncation template for conversations"):
        v1_cut_prompt(chat, "ab")


def test_resume_counts_source_ids_as_done(tmp_path: Path) -> None:
    """A part written before source_prompt_id existed reads as null; the store's index joins both columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from castillo_core.engine.store import Store

    store = Store(tmp_path / "out")
    directory = tmp_path / "out" / "prompts" / "m" / "d"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"prompt_id": ["a"], "config_hash": ["h"]}), directory / "part-old.parquet")
    pq.write_table(
        pa.table({"prompt_id": ["b", "c"], "config_hash": ["h", "h"], "source_prompt_id": ["B", None]}),
        directory / "part-new.parquet",
    )
    assert store._read_finished("m", "d") == {"h": {"a", "b", "c", "B"}}


def test_the_cap_counts_the_tokenizers_own_special_tokens() -> None:
    """As v1's ``tokenizer(text)``: BOS counts towards the cap, and is not part of the cut text."""

    class Words:  # a duck-typed tokenizer: one id per word, BOS first
        bos_token_id, eos_token_id = 0, 1
        clean_up_tokenization_spaces = False

        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return ([0] if add_special_tokens else []) + [len(w) + 2 for w in text.split()]

        def decode(self, ids: list[int], skip_special_tokens: bool = False, **_: Any) -> str:
            return " ".join("w" * (i - 2) for i in ids if not (skip_special_tokens and i in (0, 1)))

    # 4 words + BOS = 5 ids > 4: cut to BOS + 3 words; 3 words + BOS = 4 ids fit
    assert cut_with_tokenizer(Words(), ["a b c d e", "aaaa bbbb", "a b c d", "a b c"], 4) == [
        "w w w",
        None,
        "w w w",
        None,
    ]
