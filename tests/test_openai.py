"""The openai backend against real servers on 127.0.0.1.

A real llama-cpp-python server on the tiny GGUF: the stored lengths and finish reasons
are the server's (checked with direct httpx calls), and a server killed in the middle of
a `castillo run` makes castillo retry, stop with a clear message, and resume with every
prompt stored exactly once. A scripted stub server: garbage, missing usage, 429s with
Retry-After, 503s, slow answers and dropped connections give clear errors, bounded
backoff (measured from the arrival times at the server) and no prompt recorded twice.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from castillo_core import (
    BackendError,
    ConfigError,
    GenerationConfig,
    GenerationRequest,
    ModelSpec,
    Prompt,
    PromptResult,
    Rendered,
    prompt_seed,
)
from castillo_core.engine.dataset import read_table
from tests.fixtures.openai_server import LlamaServer, StubServer, environ_with, free_port, stub_length
from tests.fixtures.tiny_gguf import cached_tiny_gguf
from tests.helpers import castillo

pytest.importorskip("castillo_openai")
from castillo_openai.backend import OpenAIBackend

HAS_SERVER = all(
    importlib.util.find_spec(m) is not None
    for m in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")
)
needs_server = pytest.mark.skipif(
    not HAS_SERVER, reason="llama-cpp-python's server needs its [server] extra (fastapi, uvicorn, sse-starlette, ...)"
)

TEXTS = [f"Question {i}: why is the sky blue, and what is a hash table?" for i in range(8)]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny(request: pytest.FixtureRequest) -> Path:
    return cached_tiny_gguf(Path(request.config.cache.mkdir("castillo-llamacpp-tiny")))


@pytest.fixture(scope="module")
def llama_server(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    if not HAS_SERVER:
        pytest.skip("llama-cpp-python's server extra is not installed")
    server = LlamaServer(tiny, tmp_path_factory.mktemp("llama-server") / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_backend() -> Iterator[Callable[..., OpenAIBackend]]:
    opened: list[OpenAIBackend] = []

    def make(base_url: str, model: str = "stub-model", **options: Any) -> OpenAIBackend:
        backend = OpenAIBackend(ModelSpec(backend="openai", model=model, options={"base_url": base_url, **options}))
        backend.open()
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def _requests(texts: list[str], n: int, seed: int = 7) -> list[GenerationRequest]:
    prompts = [Prompt(dataset="t", prompt_text=t) for t in texts]
    return [
        GenerationRequest(key=i, prompt=p, rendered=Rendered(input_size=0), seed=seed + 1000 * i, n=n)
        for i, p in enumerate(prompts)
    ]


def _generate(backend: OpenAIBackend, requests: list[GenerationRequest], **config: Any) -> list[PromptResult]:
    gen = GenerationConfig(n=requests[0].n, **config)
    return sorted(backend.generate(requests, backend.sampling(gen), gen), key=lambda r: r.key)


def _gaps(stub: StubServer) -> list[float]:
    times = [a.t for a in stub.posts()]
    return [b - a for a, b in itertools.pairwise(times)]


# -- the plugin, without a server -----------------------------------------------------------------


def test_listing_imports_no_http_stack_and_options_are_checked() -> None:
    code = (
        "import sys\n"
        "import castillo_openai.plugin\n"
        "assert 'httpx' not in sys.modules, 'registering the plugin imported httpx'\n"
        "from castillo_core.cli.info import backend_rows\n"
        "rows = {r['name']: r for r in backend_rows()}\n"
        "assert rows['openai']['available'], rows['openai']\n"
        "assert 'castillo_openai._http' not in sys.modules and 'castillo_openai._run' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    spec = ModelSpec(
        backend="openai", model="m", options={"concurrency": 4, "endpoint": "chat", "base_url": "http://x"}
    )
    assert OpenAIBackend.hashed_options(spec.options) == {"endpoint": "chat"}
    assert OpenAIBackend.model_id(ModelSpec(backend="openai", options={"model": "served"})) == "served"
    with pytest.raises(ConfigError, match="no model given"):
        OpenAIBackend.model_id(ModelSpec(backend="openai"))
    with pytest.raises(ConfigError, match="extra may not set seed"):
        OpenAIBackend(ModelSpec(backend="openai", model="m", options={"extra": {"seed": 1}}))
    with pytest.raises(ConfigError, match="option concurency"):
        OpenAIBackend(ModelSpec(backend="openai", model="m", options={"concurency": 1}))
    assert OpenAIBackend(
        ModelSpec(backend="openai", model="m", options={"base_url": "http://h:1"})
    ).options.base_url == ("http://h:1/v1")
    backend = OpenAIBackend(ModelSpec(backend="openai", model="m"))
    with pytest.raises(ConfigError, match="--model-defaults"):
        backend.sampling(GenerationConfig(model_defaults=True))
    strict = OpenAIBackend(ModelSpec(backend="openai", model="m", options={"sampling_fields": "openai"}))
    with pytest.raises(ConfigError, match="top_k=20"):
        strict.sampling(GenerationConfig(top_k=20))


# -- a real server: llama-cpp-python on the tiny GGUF -------------------------------------------


@needs_server
def test_lengths_and_finish_reasons_are_the_servers(
    llama_server: LlamaServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(llama_server.base_url, model="tiny", concurrency=3)
    requests = _requests(TEXTS[:3], n=4)
    results = _generate(backend, requests, max_new_tokens=24)
    assert [r.key for r in results] == [0, 1, 2]
    lengths = []
    with httpx.Client(base_url=llama_server.base_url, timeout=60) as client:
        for request, result in zip(requests, results, strict=True):
            assert [c.sample_index for c in result.completions] == [0, 1, 2, 3]
            for c in result.completions:
                assert c.seed == request.seed + c.sample_index
                body = {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": request.prompt.prompt_text}],
                    "max_tokens": 24,
                    "seed": c.seed,
                    "temperature": 1.0,
                    "top_p": 1.0,
                    "top_k": 0,
                    "min_p": 0.0,
                    "repeat_penalty": 1.0,
                }
                direct = client.post("/chat/completions", json=body).json()
                told = direct["usage"]["completion_tokens"]
                # A server that runs past max_tokens (llama-cpp-python finishing a UTF-8
                # character) is stored capped, as "length".
                assert c.output_tokens == min(told, 24)
                want = "length" if told >= 24 else direct["choices"][0]["finish_reason"]
                assert c.finish_reason == want
                assert c.text == direct["choices"][0]["message"]["content"]
                assert backend.stats.prompt_tokens[request.prompt.prompt_id] == direct["usage"]["prompt_tokens"]
                assert result.input_size == direct["usage"]["prompt_tokens"]
                lengths.append(c.output_tokens)
    assert len(set(lengths)) > 2, "per-sample seeds must give different samples"
    assert {"stop", "length"} <= {c.finish_reason for r in results for c in r.completions}


@needs_server
@pytest.mark.slow
def test_server_killed_mid_run_retries_stops_clearly_and_resumes(tiny: Path, tmp_path: Path) -> None:
    server = LlamaServer(tiny, tmp_path / "server.log", port=free_port()).start()
    out = tmp_path / "out"
    args = [
        "run",
        "--backend",
        "openai",
        "--model",
        "tiny",
        "-B",
        f"base_url={server.base_url}",
        "-B",
        "concurrency=2",
        "-B",
        "max_retries=3",
        "-B",
        "backoff_base=0.1",
        "-B",
        "backoff_max=0.4",
        "--corpus",
        "tiny",
        "-C",
        "size=60",
        "-n",
        "3",
        "--max-new-tokens",
        "16",
        "--flush-every",
        "1",
        "--quiet",
        "--no-metrics",
        "--out",
        str(out),
    ]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "castillo_core.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ_with(COLUMNS="200"),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "prompts").rglob("part-*.parquet"))) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before the server was killed:\n{proc.communicate()}"
        server.kill()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert "retry 1/3" in stderr and "failed after 3 retries" in stderr
        assert "re-run the same command to resume" in stderr
        first = read_table(out, "prompts", columns=["prompt_id"]).column("prompt_id").to_pylist()
        assert 3 <= len(first) < 60 and len(set(first)) == len(first)

        server.start()
        castillo(*args, timeout=300)
    finally:
        server.stop()
    prompts = read_table(out, "prompts", columns=["prompt_id", "n_samples"])
    ids = prompts.column("prompt_id").to_pylist()
    assert len(ids) == 60 and len(set(ids)) == 60, "every prompt exactly once"
    assert set(first) <= set(ids)
    responses = read_table(out, "responses", columns=["prompt_id", "sample_index"]).to_pydict()
    pairs = Counter(zip(responses["prompt_id"], responses["sample_index"], strict=True))
    assert len(pairs) == 180 and max(pairs.values()) == 1


# -- a stub server: what a misbehaving server gets ----------------------------------------------------


def test_garbage_and_missing_usage_are_clear_errors_naming_the_request(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(stub.base_url, concurrency=1)
    requests = _requests(TEXTS[:1], n=2)
    pid = requests[0].prompt.prompt_id
    stub.push("garbage")
    with pytest.raises(BackendError) as err:
        _generate(backend, requests)
    message = str(err.value)
    assert f"prompt {pid} sample 0" in message and "not JSON" in message and "upstream hiccup" in message
    assert len(stub.posts()) == 1, "a body that is not JSON is not retried"

    stub.push("ok", "nousage")
    with pytest.raises(BackendError, match=rf"prompt {pid} sample 1 .*usage\.completion_tokens"):
        _generate(backend, requests)


def test_429_retry_after_is_honoured_and_backoff_is_bounded(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(stub.base_url, concurrency=1, backoff_base=0.01, backoff_max=2.0)
    stub.push("429:0.3", "429:0.3")
    [result] = _generate(backend, _requests(TEXTS[:1], n=1))
    assert len(result.completions) == 1
    gaps = _gaps(stub)
    assert len(gaps) == 2 and all(0.28 <= g < 1.0 for g in gaps), gaps  # slept what Retry-After asked
    assert [e.delay for e in backend.session.retries] == [0.3, 0.3]

    # Always 503: exponential (base 0.05, x2 per retry, jitter in [0.5, 1]) and capped at 0.15.
    stub.arrivals.clear()
    stub.default = "503"
    bounded = open_backend(stub.base_url, concurrency=1, max_retries=4, backoff_base=0.05, backoff_max=0.15)
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"failed after 4 retries .*HTTP 503.*overloaded"):
        _generate(bounded, _requests(TEXTS[:1], n=1))
    elapsed = time.monotonic() - started
    delays = [e.delay for e in bounded.session.retries]
    assert len(delays) == 4 and len(stub.posts()) == 5
    for attempt, delay in enumerate(delays):
        assert min(0.15, 0.05 * 2**attempt) * 0.5 <= delay <= min(0.15, 0.05 * 2**attempt) + 1e-9
    gaps = _gaps(stub)
    # Each gap is the sleep plus one round trip (generous slack: the machine is shared).
    assert all(d - 0.02 <= g <= d + 0.5 for d, g in zip(delays, gaps, strict=True)), (delays, gaps)
    assert elapsed < sum(delays) + 2.0

    # A Retry-After beyond backoff_max is capped too: one server cannot stall a run.
    stub.arrivals.clear()
    stub.default = "ok"
    stub.push("429:3600")
    capped = open_backend(stub.base_url, concurrency=1, backoff_max=0.2)
    _generate(capped, _requests(TEXTS[:1], n=1))
    assert [e.delay for e in capped.session.retries] == [0.2]


def test_slow_answers_time_out_and_are_retried_and_a_run_has_a_retry_budget(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(stub.base_url, concurrency=1, timeout=0.3, backoff_base=0.01)
    stub.push("slow:1.0", "drop")
    [result] = _generate(backend, _requests(TEXTS[:1], n=1))
    reasons = [e.reason for e in backend.session.retries]
    assert "no answer within the timeout" in reasons[0] and "-B timeout" in reasons[0]
    assert len(reasons) == 2 and result.completions[0].output_tokens > 0

    stub.default = "slow:1.0"
    with pytest.raises(BackendError, match=r"failed after 1 retry .*no answer within the timeout"):
        _generate(open_backend(stub.base_url, timeout=0.2, max_retries=1, backoff_base=0.01), _requests(TEXTS[:1], 1))

    stub.default = "503"
    budget = open_backend(stub.base_url, concurrency=4, max_retries=50, max_total_retries=5, backoff_base=0.01)
    with pytest.raises(BackendError, match=r"already retried 5 times \(-B max_total_retries=5\)"):
        _generate(budget, _requests(TEXTS[:4], n=2))
    assert len(budget.session.retries) == 5


def test_concurrency_is_bounded_and_results_come_as_prompts_complete(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    stub.default = "slow:0.1"
    backend = open_backend(stub.base_url, concurrency=3)
    requests = _requests(TEXTS[:6], n=2)
    gen = GenerationConfig(n=2, max_new_tokens=32)
    got = []
    for result in backend.generate(requests, backend.sampling(gen), gen):
        got.append((result.key, len(stub.posts())))
    assert stub.max_in_flight == 3
    assert got[0][1] < 12, "the first prompt is handed over before every request was sent"
    for (key, _), request in zip(sorted(got), requests, strict=True):
        assert key == request.key
    bodies = [a.body for a in stub.posts()]
    assert sorted(b["seed"] for b in bodies) == sorted(r.seed + i for r in requests for i in range(2))
    assert all(b["n"] == 1 and b["max_tokens"] == 32 and b["top_k"] == 0 and b["repeat_penalty"] == 1.0 for b in bodies)


def test_per_choice_counts_odd_finish_reasons_and_servers_that_ignore_n(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(stub.base_url, n_per_request=4, endpoint="completion")
    requests = _requests(TEXTS[:2], n=6)
    results = _generate(backend, requests, max_new_tokens=20)
    assert sorted(a.body["n"] for a in stub.posts()) == [2, 2, 4, 4]  # concurrent: any arrival order
    assert all("prompt" in a.body and "messages" not in a.body for a in stub.posts())
    for request, result in zip(requests, results, strict=True):
        for c in result.completions:
            told = stub_length(request.seed + c.sample_index, 20)
            assert c.output_tokens == min(told, 20) and c.seed == request.seed + c.sample_index
            assert c.finish_reason == ("length" if told >= 20 else "stop")
            assert c.text.startswith(f"t{c.seed}")
    assert backend.stats.over_cap == sum(stub_length(r.seed + i, 20) > 20 for r in requests for i in range(6))

    stub.push("finish:content_filter", "finish:content_filter")
    plain = open_backend(stub.base_url, concurrency=1)
    [result] = _generate(plain, _requests(["short"], n=2, seed=3), max_new_tokens=10_000)
    assert [c.finish_reason for c in result.completions] == ["stop", "stop"]
    assert plain.stats.unexpected_finish == {"content_filter": 2}

    plus = open_backend(stub.base_url, count_end_token=True)
    [result] = _generate(plus, _requests(["x"], n=6, seed=5), max_new_tokens=20)
    for c in result.completions:  # the end token of stopped samples is added, never past the cap
        told = stub_length(c.seed, 20)
        assert c.output_tokens == (min(told + 1, 20) if told < 20 else 20)

    stub.push("ignore_n")  # whichever request of the prompt (n=4 or the rest, n=2) arrives first
    with pytest.raises(BackendError, match=r"answered 1 choice\(s\) for n=[24]; this server ignores n"):
        _generate(backend, requests[:1])


def test_unknown_model_and_refused_key_are_clear_and_the_key_is_never_shown(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BackendError, match=r"serves stub-model, not 'other'"):
        open_backend(stub.base_url, model="other")
    with pytest.raises(ConfigError, match="CASTILLO_TEST_NO_KEY"):
        open_backend(stub.base_url, api_key_env="CASTILLO_TEST_NO_KEY")
    secret = "sk-castillo-test-0123456789"
    monkeypatch.setenv("CASTILLO_TEST_KEY", secret)
    backend = open_backend(stub.base_url, api_key_env="CASTILLO_TEST_KEY")
    stub.push(f"401:{secret}")
    with pytest.raises(BackendError) as err:
        _generate(backend, _requests(TEXTS[:1], n=1))
    assert "HTTP 401" in str(err.value) and "api_key_env" in str(err.value) and secret not in str(err.value)
    assert stub.posts()[-1].headers["Authorization"] == f"Bearer {secret}"


def test_cli_run_against_a_misbehaving_server_resumes_with_every_prompt_once(stub: StubServer, tmp_path: Path) -> None:
    secret = "sk-castillo-cli-secret-42"
    out = tmp_path / "out"
    args = [
        "run",
        "--backend",
        "openai",
        "--model",
        "stub-model",
        "-B",
        f"base_url={stub.base_url}",
        "-B",
        "api_key_env=CASTILLO_TEST_KEY",
        "-B",
        "concurrency=1",
        "-B",
        "backoff_base=0.01",
        "--corpus",
        "tiny",
        "-n",
        "2",
        "--max-new-tokens",
        "12",
        "--quiet",
        "--out",
        str(out),
    ]
    env = {"CASTILLO_TEST_KEY": secret}
    # 429s and a dropped connection are retried; then garbage stops the run at prompt 6.
    stub.push("ok", "429:0.05", "ok", "503", "ok", "drop", *["ok"] * 7, "garbage")
    failed = castillo(*args, env=env, check=False)
    assert failed.returncode == 2
    assert "not JSON" in failed.stderr and "sample 1" in failed.stderr and "retry 1/6" in failed.stderr
    first = read_table(out, "prompts", columns=["prompt_id"]).column("prompt_id").to_pylist()
    assert len(first) == 5

    castillo(*args, env=env)
    prompts = read_table(out, "prompts", columns=["prompt_id", "input_size", "output_sizes", "finish_reasons"])
    ids = prompts.column("prompt_id").to_pylist()
    assert len(ids) == 12 and len(set(ids)) == 12 and set(first) <= set(ids)
    assert set(prompts.column("input_size").to_pylist()) == {11}  # the server's usage.prompt_tokens
    responses = read_table(out, "responses", columns=["prompt_id", "sample_index", "seed", "output_tokens"])
    rows = responses.to_pylist()
    assert len(rows) == 24 and len({(r["prompt_id"], r["sample_index"]) for r in rows}) == 24
    for r in rows:
        assert r["output_tokens"] == min(stub_length(r["seed"], 12), 12)
    seeds = {r["prompt_id"]: r["seed"] - r["sample_index"] for r in rows}
    assert all(seeds[pid] == prompt_seed(0, pid, 2) for pid in ids)

    # The key reached the server, and nothing castillo wrote or printed holds it.
    assert all(a.headers.get("Authorization") == f"Bearer {secret}" for a in stub.arrivals)
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in failed.stdout + failed.stderr
    manifest = (out / "manifest.json").read_text()
    assert "CASTILLO_TEST_KEY" in manifest and "the server's own" in manifest


# -- secrets: the key, user:password and credential parameters never leave the process -------------

KEY = "sk-castillo-KEY-7f3a9c"
USER = "alice-castillo"
PASSWORD = "pw-castillo-PASS-51d2"
QUERY_TOKEN = "qtok-castillo-TOKEN-88e1"
SECRETS = {
    "api key": KEY,
    "url user": USER,
    "url password": PASSWORD,
    "api_key query parameter": QUERY_TOKEN,
    "basic auth header": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
}
# What castillo_core itself records verbatim today (the command line in the manifest and in
# the output lock, the run's options in the manifest): it needs a core change (issue 17,
# item 7), reported, not the backend's to fix.
CORE_RECORDS = (
    re.compile(r"manifest\.json: runs\[\d+\]\.argv\[\d+\]$"),
    re.compile(r"manifest\.json: runs\[\d+\]\.spec\.models\[\d+\]\.options\.base_url$"),
    re.compile(r"\.castillo\.lock$"),
)


def _json_leaks(where: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_leaks(f"{where}.{k}", v)
            yield from ((f"{where} (key)", s) for s in _found(str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _json_leaks(f"{where}[{i}]", v)
    else:
        yield from ((where, s) for s in _found(str(value)))


def _found(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def _everything_written(out: Path, printed: dict[str, str]) -> list[tuple[str, str]]:
    """(where, which secret) for every secret in what a run printed or wrote under ``out``."""
    leaks = [(where, s) for where, text in printed.items() for s in _found(text)]
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        data = path.read_bytes()
        if path.name == "manifest.json":
            leaks += _json_leaks("manifest.json:", json.loads(data))
            leaks = [(w.replace("manifest.json:.", "manifest.json: "), s) for w, s in leaks]
            continue
        leaks += [(rel, s) for s in _found(data.decode("latin-1"))]
        if path.suffix == ".parquet":  # compressed pages hide text from a byte search: decode them
            meta = pq.read_schema(path).metadata or {}
            for k, v in meta.items():
                leaks += [(f"{rel} metadata {k.decode()}", s) for s in _found(v.decode("utf-8", "replace"))]
            leaks += [(f"{rel} rows", s) for s in _found(str(pq.read_table(path).to_pylist()))]
    return leaks


def test_no_secret_reaches_anything_a_run_prints_or_writes(stub: StubServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with_token = f"{stub.base_url}?api_key={QUERY_TOKEN}&api-version=2024-06-01"
    with_userinfo = with_token.replace("http://", f"http://{USER}:{PASSWORD}@", 1)
    common = ["--corpus", "tiny", "-n", "2", "--max-new-tokens", "12", "--quiet", "--out", str(out)]
    backend = ["run", "--backend", "openai", "--model", "stub-model", "-B", "concurrency=1", "-B", "max_retries=2"]
    backend += ["-B", "backoff_base=0.01"]
    printed: dict[str, str] = {}

    def run(name: str, *args: str, env: dict[str, str] | None = None, debug: bool = False) -> Any:
        proc = castillo(*(["--debug"] if debug else []), *backend, *args, *common, env=env, check=False)
        printed[f"{name} stdout"], printed[f"{name} stderr"] = proc.stdout, proc.stderr
        return proc

    # The key as a file read into a variable leaves it: with CR LF. It is stripped and sent;
    # a proxy that quotes the request (query and headers) in its 500s fails the run (--debug:
    # httpx's request log, tracebacks).
    keyed = ["-B", f"base_url={with_token}", "-B", "api_key_env=CASTILLO_TEST_KEY"]
    stub.push("ok", "ok", "ok", "echo", "echo", "echo")
    failed = run("failing", *keyed, env={"CASTILLO_TEST_KEY": KEY + "\r\n"}, debug=True)
    assert failed.returncode == 1 and "Traceback" in failed.stderr, failed.stderr  # --debug: the traceback too
    assert "HTTP 500" in failed.stderr and "failed after 2 retries" in failed.stderr
    assert "HTTP Request: POST" in failed.stderr  # the debug log was on: it is redacted, not silenced
    assert "Illegal header value" not in failed.stderr
    posts = stub.posts()
    assert {a.headers["Authorization"] for a in posts} == {f"Bearer {KEY}"}
    assert all(f"api_key={QUERY_TOKEN}" in a.path and "api-version=2024-06-01" in a.path for a in posts)

    # A key with a control character inside cannot be sent: one line, before any request.
    stub.arrivals.clear()
    bad = run("bad key", *keyed, env={"CASTILLO_TEST_KEY": KEY[:6] + "\x07" + KEY[6:]})
    assert bad.returncode == 2 and "$CASTILLO_TEST_KEY holds a control or non-ASCII character" in bad.stderr
    assert "Traceback" not in bad.stderr and not stub.posts()

    # Both a key and user:password (the URL from a variable, off the command line): one
    # Authorization header, so the key goes, and a warning says so; the echoing proxy fails
    # this run too.
    stub.push("echo", "echo", "echo")
    env = {"CASTILLO_TEST_KEY": KEY, "CASTILLO_TEST_URL": with_userinfo}
    both = run("both", *keyed[2:], "-B", "base_url_env=CASTILLO_TEST_URL", env=env, debug=True)
    assert both.returncode == 1 and "only the API key is sent" in both.stderr, both.stderr
    assert {a.headers["Authorization"] for a in stub.posts()} == {f"Bearer {KEY}"}

    # user:password alone go as basic auth; the run resumes and completes.
    stub.arrivals.clear()
    stub.push("echo")
    done = run("userinfo", "-B", f"base_url={with_userinfo}")
    assert done.returncode == 0, done.stderr
    assert {a.headers["Authorization"] for a in stub.posts()} == {f"Basic {SECRETS['basic auth header']}"}
    assert len(read_table(out, "prompts", columns=["prompt_id"])) == 12

    manifest = (out / "manifest.json").read_text()
    assert "CASTILLO_TEST_KEY" in manifest and "api-version=2024-06-01" in manifest  # the name, the public query
    leaks = _everything_written(out, printed)
    assert list(out.rglob("*.parquet")), "the runs wrote Parquet parts, and they were searched"
    ours = [leak for leak in leaks if not any(p.search(leak[0]) for p in CORE_RECORDS)]
    assert not ours, ours
    runs = json.loads(manifest)["runs"]
    [via_env] = [i for i, r in enumerate(runs) if "base_url_env=CASTILLO_TEST_URL" in r["argv"]]
    assert not [w for w, _ in leaks if w.startswith(f"manifest.json: runs[{via_env}].")], "-B base_url_env"
    assert not leaks, f"castillo_core recorded a secret: {sorted({w for w, _ in leaks})}"


def test_a_request_that_cannot_be_sent_is_not_retried_and_its_headers_not_shown(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(stub.base_url, check_model=False, backoff_base=0.01)
    backend.session.headers["X-Api-Key"] = KEY + "\r\nX-Injected: 1"
    with pytest.raises(BackendError, match=r"could not be sent .*not retried") as err:
        _generate(backend, _requests(TEXTS[:1], n=1))
    assert KEY not in str(err.value) and err.value.__cause__ is None and err.value.__suppress_context__
    assert not stub.posts() and not backend.session.retries
    assert OpenAIBackend.public_options({"base_url": f"http://{USER}:{PASSWORD}@h:1/v1?key={KEY}&v=2"}) == {
        "base_url": "http://h:1/v1?v=2"
    }
    with pytest.raises(ConfigError) as bad:
        OpenAIBackend(ModelSpec(backend="openai", model="m", options={"base_url": f"{USER}:{PASSWORD}@host"}))
    assert PASSWORD not in str(bad.value)


# -- a total deadline per request ---------------------------------------------------------------------


def test_a_trickling_server_times_out_at_the_deadline_on_every_attempt(stub: StubServer, tmp_path: Path) -> None:
    stub.default = "trickle:1.0"  # headers at once, then one byte a second: no read ever waits 3 s
    args = ["run", "--backend", "openai", "--model", "stub-model", "-B", f"base_url={stub.base_url}"]
    args += ["-B", "timeout=3", "-B", "max_retries=1", "-B", "backoff_base=0.01", "-B", "concurrency=1"]
    args += ["--corpus", "tiny", "-n", "1", "--quiet", "--no-metrics", "--out", str(tmp_path / "out")]
    started = time.monotonic()
    proc = castillo(*args, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert "failed after 1 retry" in proc.stderr and "no answer within the timeout" in proc.stderr
    assert "-B timeout=3 s" in proc.stderr and "however slowly the server sends it" in proc.stderr
    posts = stub.posts()
    assert len(posts) == 2
    gap = posts[1].t - posts[0].t
    assert 2.9 <= gap <= 4.5, gap  # one attempt: the 3 s deadline (plus a 0.01 s backoff)
    assert elapsed < 3 * 2 + 4, elapsed


# -- a server whose context is smaller than prompt + max tokens ---------------------------------------


def test_a_sample_cut_by_the_servers_context_is_named_not_stored(
    stub: StubServer, open_backend: Callable[..., OpenAIBackend]
) -> None:
    backend = open_backend(stub.base_url, concurrency=1)
    requests = _requests(TEXTS[:2], n=2)
    pid = requests[1].prompt.prompt_id
    # llama.cpp lowers max_tokens to what is left of its context: "length" below the cap.
    stub.push("ok", "ok", "short:5")
    got = []
    with pytest.raises(BackendError) as err:
        gen = GenerationConfig(n=2, max_new_tokens=40)
        for result in backend.generate(requests, backend.sampling(gen), gen):
            got.append(result.key)
    message = str(err.value)
    assert got == [0], "the prompt finished before is handed over"
    assert f"prompt {pid} sample 0" in message and f"the server at {stub.base_url}" in message
    assert "stopped the sample at 5 tokens with finish_reason 'length', below max_tokens=40" in message
    assert "the prompt (11 tokens) + --max-new-tokens 40 = 51 tokens" in message
    assert "larger context" in message and "lower --max-new-tokens" in message and "resume" in message

    # vLLM refuses such a request up front (HTTP 400): named the same way, not retried.
    stub.arrivals.clear()
    stub.push(
        "error:400:This model's maximum context length is 48 tokens. However, you requested 51 tokens "
        "(11 in the messages, 40 in the completion)."
    )
    with pytest.raises(BackendError) as err:
        _generate(backend, requests[:1], max_new_tokens=40)
    assert "no room in its context (n_ctx) for the prompt (11 tokens) + --max-new-tokens 40" in str(err.value)
    assert "it answered HTTP 400: This model's maximum context length is 48 tokens." in str(err.value)
    assert len(stub.posts()) == 1


@needs_server
@pytest.mark.slow
def test_llama_server_with_a_small_context_stops_naming_it_and_keeps_what_was_stored(
    tiny: Path, tmp_path: Path
) -> None:
    short = ["Why is the sky blue?", "What is a hash table?", "List five prime numbers.", "Name a color."]
    long = "Why is the sky blue? " * 5 + "Why is it?"  # 61 prompt tokens: fits in 64, not with 16 more
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in [*short, long]))
    server = LlamaServer(tiny, tmp_path / "server.log", n_ctx=64).start()
    out = tmp_path / "out"
    args = ["run", "--backend", "openai", "--model", "tiny", "-B", f"base_url={server.base_url}"]
    args += ["-B", "concurrency=1", "--corpus", "jsonl", "--source", str(source), "-n", "3"]
    args += ["--max-new-tokens", "16", "--quiet", "--no-metrics", "--out", str(out)]
    try:
        for _ in range(2):  # the same command fails the same way, and stores nothing twice
            proc = castillo(*args, check=False)
            assert proc.returncode == 2, proc.stderr
            [line] = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
            assert f"the server at {server.base_url} has no room in its context (n_ctx)" in line
            assert "--max-new-tokens 16" in line and "llama-cpp-python: --n_ctx" in line
            assert "failed after" not in line, "a full context is not retried"
            stored = read_table(out, "prompts", columns=["prompt_id", "prompt_text"]).to_pydict()
            assert sorted(stored["prompt_text"]) == sorted(short)
            assert f"prompt {_prompt_ids(source)[long]} sample" in line
        # A larger context: the re-run resumes with the one prompt left.
        server.stop()
        server.n_ctx = 256
        server.start()
        castillo(*args)
    finally:
        server.stop()
    prompts = read_table(out, "prompts", columns=["prompt_text"]).column("prompt_text").to_pylist()
    assert sorted(prompts) == sorted([*short, long])
    responses = read_table(out, "responses", columns=["prompt_id", "sample_index"]).to_pydict()
    assert (
        len(set(zip(responses["prompt_id"], responses["sample_index"], strict=True)))
        == 15
        == len(responses["prompt_id"])
    )


def _prompt_ids(source: Path) -> dict[str, str]:
    """Prompt text -> prompt id of a jsonl corpus, as `castillo prompts` prints them."""
    proc = castillo("prompts", "--corpus", "jsonl", "--source", str(source), "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {r["prompt_text"]: r["prompt_id"] for r in rows}
