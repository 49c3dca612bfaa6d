"""Conformance checks a plugin author runs from their own tests (castillo runs them on its built-ins).

Each check exercises one plugin class the way the engine will and raises
``AssertionError`` with a message that says which rule was broken::

    from castillo_core.testing import check_backend, check_corpus, check_metric

    def test_my_backend_conforms():
        check_backend(MyBackend, ModelSpec(backend="mine", model="path/to/model"))

    def test_my_metric_conforms():
        check_metric(MyMetric, options={"threshold": 0.5})
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from castillo_core.api.contracts import Backend, Corpus, ModelInfo
from castillo_core.api.errors import BackendError
from castillo_core.api.metric import Metric, ResponseBatch
from castillo_core.api.records import (
    CorpusSelection,
    GenerationConfig,
    ModelSpec,
    Prompt,
    PromptResult,
    Rejection,
    Rendered,
    SamplingSettings,
)
from castillo_core.api.requests import build_requests

PROMPTS = (
    "Write one sentence about the sea.",
    "List three prime numbers.",
    "What is 2 + 2?",
    "Explain recursion to a child in two sentences.",
)
_ID = re.compile(r"^[0-9a-f]{16}$")


def _fail(where: str, rule: str) -> None:
    raise AssertionError(f"{where}: {rule}")


# -- backends --------------------------------------------------------------------------------


def check_backend(
    backend_cls: type[Backend],
    spec: ModelSpec,
    prompts: Sequence[str] = PROMPTS,
    n: int = 3,
    max_new_tokens: int = 12,
    seed: int = 1234,
    batch_invariant: bool = True,
    **generation: Any,
) -> None:
    """A backend opens, renders one ``Rendered`` per prompt in order, and generates by the rules.

    Rules: every request's result comes back once, with ``n`` completions in sample order;
    sample ``i`` carries ``request.seed + i``; counts stay within the cap and ``length`` is
    reported exactly at the cap; the same requests give the same completions (seeded);
    and, with ``batch_invariant``, a prompt's completions do not depend on which other
    prompts share its call. ``generation`` sets further GenerationConfig fields.
    """
    where = f"backend {backend_cls.name}"
    model_id = backend_cls.model_id(spec)
    if not isinstance(model_id, str) or not model_id:
        _fail(where, f"model_id(spec) must be a non-empty string, got {model_id!r}")
    config = GenerationConfig(n=n, max_new_tokens=max_new_tokens, seed=seed, **generation)
    backend = backend_cls(spec)
    try:
        info = backend.open()
        if not isinstance(info, ModelInfo) or not info.model:
            _fail(where, f"open() must return a ModelInfo naming the model, got {info!r}")
        settings = backend.sampling(config)
        if not isinstance(settings, SamplingSettings):
            _fail(where, f"sampling() must return SamplingSettings, got {type(settings).__name__}")
        records = [Prompt(dataset="conformance", prompt_text=t) for t in prompts]
        rendered = _check_render(backend, records, where)
        requests = build_requests(records, rendered, config, backend=backend_cls.name)
        first = _generate(backend, requests, settings, config, where)
        again = _generate(backend, requests, settings, config, where)
        _same(first, again, where, "the same requests (same seeds) gave different completions")
        if batch_invariant and len(records) > 1:
            alone = _generate(backend, requests[:1], settings, config, where)
            _same({0: first[0]}, alone, where, "a prompt's completions changed when it was generated alone")
        json.dumps(backend.report())
    finally:
        backend.close()


def _check_render(backend: Backend, prompts: list[Prompt], where: str) -> list[Rendered]:
    rendered = list(backend.render(prompts, 2500))
    if len(rendered) != len(prompts) or not all(isinstance(r, Rendered) for r in rendered):
        _fail(where, f"render() must return one Rendered per prompt, in order; got {len(rendered)} for {len(prompts)}")
    for r in rendered:
        if r.truncated:
            _fail(where, "render() flagged a short prompt as truncated")
    long = [Prompt(dataset="conformance", prompt_text="word " * 400)]
    (cut,) = backend.render(long, 16)
    if cut.truncated and cut.input_size > 16:
        _fail(where, f"a prompt truncated to max_prompt_tokens=16 reports input_size {cut.input_size}")
    return rendered


def _generate(
    backend: Backend, requests: list[Any], settings: SamplingSettings, config: GenerationConfig, where: str
) -> dict[int, list[tuple[int, int, str, str]]]:
    from castillo_core.engine.runner import validate_result

    by_key = {r.key: r for r in requests}
    out: dict[int, list[tuple[int, int, str, str]]] = {}
    for result in backend.generate(requests, settings, config):
        if not isinstance(result, PromptResult):
            _fail(where, f"generate() must yield PromptResult, got {type(result).__name__}")
        if result.key not in by_key or result.key in out:
            _fail(where, f"generate() yielded an unknown or repeated key {result.key}")
        request = by_key[result.key]
        try:
            validate_result(result, request, backend.name, config.max_new_tokens)
        except BackendError as exc:  # the engine's own check, reported as a broken rule
            _fail(where, str(exc))
        for i, c in enumerate(sorted(result.completions, key=lambda c: c.sample_index)):
            if c.seed != request.seed + i:
                _fail(where, f"sample {i} of prompt {request.key} used seed {c.seed}, not request.seed + {i}")
            if c.finish_reason == "stop" and c.output_tokens == 0 and c.text:
                _fail(where, "a completion with text reports 0 output tokens")
        out[result.key] = [
            (c.sample_index, c.output_tokens, c.finish_reason, c.text)
            for c in sorted(result.completions, key=lambda c: c.sample_index)
        ]
    missing = sorted(set(by_key) - set(out))
    if missing:
        _fail(where, f"generate() returned nothing for request keys {missing}")
    return out


def _same(a: Mapping[int, Any], b: Mapping[int, Any], where: str, rule: str) -> None:
    for key in a:
        if a[key] != b.get(key):
            _fail(where, f"{rule} (prompt {key}: {a[key][:1]} vs {(b.get(key) or [None])[:1]})")


# -- corpora ---------------------------------------------------------------------------------


def check_corpus(corpus_cls: type[Corpus], selection: CorpusSelection | None = None, limit: int = 200) -> None:
    """A corpus yields only Prompts and Rejections, the same ones in the same order every time.

    Every prompt carries the corpus's dataset name, the selection's split and a v1-style
    16-hex-digit id; ``version()`` is stable.
    """
    selection = selection or CorpusSelection(corpus=corpus_cls.name)
    where = f"corpus {corpus_cls.name}"
    first = _read(corpus_cls(selection), limit, where)
    second = _read(corpus_cls(selection), limit, where)
    if first != second:
        _fail(where, "two readings of the same selection differ (prompts must come in a fixed order)")
    corpus = corpus_cls(selection)
    if corpus.version() != corpus_cls(selection).version() or not isinstance(corpus.version(), str):
        _fail(where, "version() must be a stable string")
    if not any(isinstance(item, tuple) and item[0] == "prompt" for item in first):
        _fail(where, f"the selection {selection.model_dump(exclude_defaults=True)} yielded no prompt")
    for item in first:
        if item[0] != "prompt":
            continue
        _, pid, dataset, split, _text = item
        if not _ID.match(pid):
            _fail(where, f"prompt id {pid!r} is not 16 hex digits")
        if dataset != corpus.dataset_name():
            _fail(where, f"a prompt's dataset {dataset!r} is not the corpus's {corpus.dataset_name()!r}")
        if split != corpus.split:
            _fail(where, f"a prompt's split {split!r} is not the selection's {corpus.split!r}")


def _read(corpus: Corpus, limit: int, where: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in corpus.iter_prompts():
        if isinstance(item, Prompt):
            out.append(("prompt", item.prompt_id, item.dataset, item.split, item.prompt_text))
        elif isinstance(item, Rejection):
            out.append(("rejection", item.source, str(item.index), item.reason))
        else:
            _fail(where, f"iter_prompts() yielded {type(item).__name__}; only Prompt and Rejection are allowed")
        if len(out) >= limit:
            break
    return out


# -- metrics ---------------------------------------------------------------------------------

_TEXTS = (
    "Short.",
    "",
    "A longer answer with several words, and a comma.",
    "def f(x):\n    return x\n",
    "ha " * 60,
    "Ünïcödé 🙂",
    "1 2 3 4 5 6 7 8 9 10",
    "The end.",
)


def check_metric(
    metric_cls: type[Metric], options: Mapping[str, Any] | None = None, n: int = 3, max_new_tokens: int = 64
) -> None:
    """A metric starts with its options, returns its declared columns with their declared types,
    gives the same values twice, and a prompt's values never depend on the other prompts in the batch.
    """
    from castillo_core.engine.metrics import MetricSetting, _options, score_all

    setting = MetricSetting(metric_cls.name, metric_cls, "conformance", "0", _options(metric_cls, dict(options or {})))
    prompts = [[_TEXTS[(p * n + i) % len(_TEXTS)] for i in range(n)] for p in range(4)]
    whole = _score(setting, prompts, max_new_tokens, n, score_all)
    if whole != _score(setting, prompts, max_new_tokens, n, score_all):
        _fail(setting.label, "scoring the same batch twice gave different values")
    for index, order in ((0, [0]), (2, [2, 0]), (3, [3, 1, 2])):
        part = _score(setting, [prompts[i] for i in order], max_new_tokens, n, score_all)
        position = order.index(index)
        for column, values in whole.items():
            if _row(values, index, n, column, whole) != _row(part[column], position, n, column, part):
                _fail(
                    setting.label,
                    f"column {column!r} of prompt {index} changed when other prompts shared (or left) its batch",
                )


def _score(setting: Any, prompts: list[list[str]], cap: int, n: int, score_all: Any) -> dict[str, list[Any]]:
    import numpy as np

    texts = [t for p in prompts for t in p]
    tokens = np.array([min(len(t.split()) + 1, cap) for t in texts], dtype=np.int64)
    reasons = ["length" if t >= cap else "stop" for t in tokens]
    offsets = np.arange(0, len(texts) + 1, n, dtype=np.int64)
    batch = ResponseBatch(texts, tokens, reasons, offsets, cap)
    response, prompt, failures = score_all(batch, [(setting, setting.instantiate(cap, n))], len(prompts))
    if failures:
        _fail(setting.label, next(iter(failures.values())))
    values = {f"responses.{k}": _plain(v) for k, v in response.items()}
    values.update({f"prompts.{k}": _plain(v) for k, v in prompt.items()})
    return values


def _plain(values: Any) -> list[Any]:
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    return ["nan" if isinstance(v, float) and math.isnan(v) else v for v in out]


def _row(values: list[Any], index: int, n: int, column: str, _all: Mapping[str, Any]) -> list[Any]:
    if column.startswith("prompts."):
        return [values[index]]
    return values[index * n : (index + 1) * n]
