"""castillo_core.testing's conformance kit, run over every built-in backend, corpus and metric.

The same checks a third-party author calls from their own tests; the built-ins must pass
them (vLLM's run in its own environment, tests/test_vllm.py).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from castillo_core import Column, CorpusSelection, Metric, ModelSpec, ResponseBatch
from castillo_core.plugins import get_plugins
from castillo_core.testing import check_backend, check_corpus, check_metric
from tests.fixtures import corpora_records as fx
from tests.fixtures.tiny_gguf import cached_tiny_gguf
from tests.fixtures.tiny_hf import cached_tiny_hf

# -- metrics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("length", {}),
        ("degeneration", {}),
        ("degeneration", {"max_compression": 0.3, "window": 256}),
    ],
)
def test_builtin_metrics_conform(name: str, options: dict[str, Any]) -> None:
    check_metric(get_plugins().metric(name), options=options)


def test_example_plugin_metric_conforms() -> None:
    spec = importlib.util.spec_from_file_location(
        "castillo_example_conformance",
        Path(__file__).resolve().parent.parent / "docs/examples/castillo-example-plugin/castillo_example/plugin.py",
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check_metric(module.DigitsMetric)


class _BatchDependent(Metric):
    """Normalizes by the batch's longest response: a value that depends on other prompts."""

    name = "batch-dependent"

    def response_columns(self) -> list[Column]:
        return [Column("relative_tokens", "float64")]

    def score(self, batch: ResponseBatch) -> dict[str, Any]:
        return {"relative_tokens": batch.output_tokens / max(int(batch.output_tokens.max()), 1)}


class _WrongType(Metric):
    name = "wrong-type"

    def response_columns(self) -> list[Column]:
        return [Column("label", "int64")]

    def score(self, batch: ResponseBatch) -> dict[str, Any]:
        return {"label": ["x"] * len(batch)}


def test_check_metric_catches_batch_dependence_and_wrong_types() -> None:
    with pytest.raises(AssertionError, match="changed when other prompts shared"):
        check_metric(_BatchDependent)
    with pytest.raises(AssertionError, match="column 'label' \\(int64\\): holds"):
        check_metric(_WrongType)


# -- corpora ---------------------------------------------------------------------------------------

_NATIVE = {
    "alpaca": ("alpaca.json", fx.alpaca),
    "dolly": ("dolly.jsonl", fx.dolly),
    "sharegpt": ("sharegpt.json", fx.sharegpt),
    "mbpp": ("mbpp.jsonl", fx.mbpp),
    "apps": ("apps.jsonl", fx.apps),
    "ds1000": ("ds1000.jsonl", fx.ds1000),
    "bigcodebench": ("bigcodebench.parquet", fx.bigcodebench),
}


@pytest.mark.parametrize("name", sorted(_NATIVE))
def test_castillo_corpora_conform(name: str, tmp_path: Path) -> None:
    file, records = _NATIVE[name]
    source = fx.write(tmp_path / file, records(40))
    corpus = get_plugins().corpus(name)
    for split in ("full", "test"):
        check_corpus(corpus, CorpusSelection(corpus=name, source=str(source), split=split))


def test_other_builtin_corpora_conform(tmp_path: Path) -> None:
    plugins = get_plugins()
    check_corpus(plugins.corpus("tiny"))
    check_corpus(plugins.corpus("humaneval"), CorpusSelection(corpus="humaneval"))
    source = fx.write(tmp_path / "prompts.jsonl", [{"prompt": f"Question {i}?"} for i in range(5)])
    check_corpus(plugins.corpus("jsonl"), CorpusSelection(corpus="jsonl", source=str(source)))
    check_corpus(plugins.corpus("hf"), CorpusSelection(corpus="hf", source=str(source)))


def test_every_installed_corpus_is_covered() -> None:
    covered = {*_NATIVE, "tiny", "humaneval", "jsonl", "hf", "proverbs"}
    names = {e.name for e in get_plugins().entries("corpus")}
    assert names <= covered, f"corpora without a conformance test: {sorted(names - covered)}"


# -- backends --------------------------------------------------------------------------------------


def test_fake_backend_conforms() -> None:
    check_backend(get_plugins().backend("fake"), ModelSpec(backend="fake"))


@pytest.fixture(scope="module")
def tiny_gguf(request: pytest.FixtureRequest) -> Path:
    return cached_tiny_gguf(Path(request.config.cache.mkdir("castillo-llamacpp-tiny")))


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llamacpp_backend_conforms(tiny_gguf: Path) -> None:
    spec = ModelSpec(backend="llamacpp", model=str(tiny_gguf), options={"n_threads": 1, "n_parallel": 8})
    check_backend(get_plugins().backend("llamacpp"), spec, max_new_tokens=16)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_transformers_backend_conforms(request: pytest.FixtureRequest) -> None:
    model = cached_tiny_hf(Path(request.config.cache.mkdir("castillo-tiny-hf")), stop_logit=6.0)
    spec = ModelSpec(backend="transformers", model=str(model), options={"device": "cpu"})
    check_backend(get_plugins().backend("transformers"), spec, max_new_tokens=16)


@pytest.fixture(scope="module")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.fixtures.openai_server import LlamaServer

    needs = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")
    if any(importlib.util.find_spec(m) is None for m in needs):
        pytest.skip("llama-cpp-python's server extra is not installed")
    server = LlamaServer(tiny_gguf, tmp_path_factory.mktemp("conformance-server") / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_openai_backend_conforms_against_llama_cpp_server(llama_server: Any) -> None:
    spec = ModelSpec(backend="openai", model="tiny", options={"base_url": llama_server.base_url})
    # the server batches requests as it likes: determinism per request, not batch invariance
    check_backend(get_plugins().backend("openai"), spec, max_new_tokens=12, batch_invariant=False)
