"""castillo's llama.cpp backend against llama.cpp's own server with ``--parallel``.

The strongest alternative a user has for many samples of many prompts on llama.cpp is its
own HTTP server with ``S`` parallel slots (continuous batching in C++). Same GGUF, same
prompts, N, cap, seeds and sampling values (temperature 1, no top-k/top-p/min-p), the same
llama.cpp (``bench/build_llama_server.sh`` builds the server from the sources that the
installed llama-cpp-python vendors), the same threads, measured side by side over rounds
whose order rotates:

1. castillo: the llamacpp backend's ``generate`` in this process (``n_parallel = S``);
2. server, direct: the plainest client, ``S`` concurrent ``POST /completion`` requests
   with the very token ids castillo decodes (``cache_prompt`` on, so a slot reuses the
   prompt it evaluated last);
3. server through castillo: the openai backend (``/v1/chat/completions``, concurrency
   ``S``; the server applies the GGUF's chat template).

Figures: generated tokens per second, the end token counted once. The headline ratios are
medians over rounds of the per-round ratios; the best round is printed beside them.

    bash bench/build_llama_server.sh                 # once: .cache/bench/llama-server
    python bench/llamacpp_server.py                  # 20 HumanEval prompts x N=10, cap 64, 3 rounds
    python bench/llamacpp_server.py --quick          # 4 prompts x N=4, cap 16, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llamacpp_batched import load, load_prompts, machine  # noqa: E402


def find_server(given: str | None) -> Path:
    for candidate in (given, os.environ.get("LLAMA_SERVER"), REPO / ".cache/bench/llama-server"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise SystemExit("no llama-server found: run `bash bench/build_llama_server.sh` or pass --server PATH")


class Server:
    """llama-server on a free loopback port, started afresh for each run that uses it."""

    def __init__(self, binary: Path, model: Path, parallel: int, n_ctx: int, threads: int, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.args = [
            str(binary),
            *("-m", str(model), "--host", "127.0.0.1", "--port", str(self.port)),
            *("--parallel", str(parallel), "-c", str(n_ctx), "-t", str(threads), "-tb", str(threads)),
            *("--cont-batching", "--kv-unified", "--jinja", "--no-webui"),
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import httpx

        self.proc = subprocess.Popen(self.args, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"llama-server did not become healthy in 120 s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


async def direct(url: str, requests: list[Any], cap: int, parallel: int) -> tuple[float, int]:
    """S workers posting /completion with token ids; (seconds, generated tokens)."""
    import httpx

    bodies = [
        {
            "prompt": list(r.rendered.payload),
            "n_predict": cap,
            "seed": r.seed + i,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "cache_prompt": True,
        }
        for r in requests
        for i in range(r.n)
    ]
    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        (await client.get("/health")).raise_for_status()
        todo = iter(bodies)
        tokens = 0

        async def worker() -> None:
            nonlocal tokens
            for body in todo:
                response = await client.post("/completion", json=body)
                response.raise_for_status()
                data = response.json()
                # The server leaves the end token out of tokens_predicted; castillo counts it once.
                tokens += int(data["tokens_predicted"]) + (data.get("stop_type") == "eos")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        return time.perf_counter() - start, tokens


def through_openai(url: str, model: Path, requests: list[Any], config: Any, parallel: int) -> tuple[float, int]:
    from castillo_openai.backend import OpenAIBackend

    from castillo_core import ModelSpec

    options = {"base_url": f"{url}/v1", "concurrency": parallel, "sampling_fields": "llamacpp"}
    backend = OpenAIBackend(ModelSpec(backend="openai", model=str(model), options=options))
    backend.open()
    try:
        settings = backend.sampling(config)
        start = time.perf_counter()
        results = list(backend.generate(requests, settings, config))
        return time.perf_counter() - start, sum(c.output_tokens for r in results for c in r.completions)
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="llama-server binary (default: .cache/bench/llama-server, $LLAMA_SERVER)")
    parser.add_argument("--model", default="smollm2-135m", help="alias or GGUF path (default: the bundled SmolLM2)")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=16, help="slots: castillo's n_parallel, the server's -np")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 prompts x N=4, cap 16, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.rounds = 4, 4, 16, 1
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from castillo_llamacpp import _llama, models
    from castillo_llamacpp.backend import LlamaCppBackend

    from castillo_core import GenerationConfig, ModelSpec, build_requests

    binary = find_server(args.server)
    threads = args.threads or _llama.default_threads()
    path = models.fetch(models.resolve(args.model), None)
    corpus, prompts = load_prompts(args.prompts)
    config = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
    options = {"n_threads": threads, "n_parallel": args.parallel}
    backend = LlamaCppBackend(ModelSpec(backend="llamacpp", model=str(path), options=options))
    backend.open()
    rendered = backend.render(prompts, config.max_prompt_tokens)
    requests = build_requests(prompts, rendered, config, "llamacpp")
    longest = max(len(r.payload) for r in rendered)
    n_ctx = 256 * (args.parallel * (longest + config.max_new_tokens + 8) // 256 + 1)
    log = REPO / ".cache" / "bench" / "llama-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = Server(binary, path, args.parallel, n_ctx, threads, log)
    print(
        f"model {path.name}, {len(requests)} {corpus} prompts x N={config.n}, cap {config.max_new_tokens}, "
        f"{threads} threads, {args.parallel} slots / sequences, n_ctx {n_ctx}, {args.rounds} rounds",
        flush=True,
    )
    print(f"machine: {machine()}", flush=True)
    print(f"llama.cpp: llama-cpp-python {_llama.library_version()}; server {binary}", flush=True)
    print(f"load average before: {load()}", flush=True)
    try:
        order = ["castillo", "direct", "openai"]
        rounds: list[dict[str, float]] = []
        for round_ in range(args.rounds):
            rates: dict[str, float] = {}
            for name in order:
                if name == "castillo":
                    start = time.perf_counter()
                    results = list(backend.generate(requests, backend.sampling(config), config))
                    tokens = sum(c.output_tokens for r in results for c in r.completions)
                    rates[name] = tokens / (time.perf_counter() - start)
                else:
                    # A fresh server per run: its prompt cache (--cache-ram) would otherwise hand
                    # the later runs the prompts an earlier run evaluated, which a grid never sees.
                    server.start()
                    try:
                        if name == "direct":
                            coroutine = direct(server.url, requests, config.max_new_tokens, args.parallel)
                            seconds, tokens = asyncio.run(coroutine)
                        else:
                            seconds, tokens = through_openai(server.url, path, requests, config, args.parallel)
                    finally:
                        server.stop()
                    rates[name] = tokens / seconds
            order = order[1:] + order[:1]
            rounds.append(rates)
            print(
                f"  round {round_}: castillo {rates['castillo']:.1f}, server direct {rates['direct']:.1f}, "
                f"server through castillo's openai backend {rates['openai']:.1f} tok/s; load {load()}",
                flush=True,
            )
    finally:
        backend.close()

    def ratio(a: str, b: str) -> tuple[float, float]:
        values = [r[a] / r[b] for r in rounds]
        return statistics.median(values), max(values)

    print()
    labels = {
        "castillo": "castillo llamacpp backend",
        "direct": f"llama-server --parallel {args.parallel}, direct",
        "openai": "llama-server via castillo openai backend",
    }
    print(f"{'run (median of ' + str(len(rounds)) + ' rounds)':<46} {'tok/s':>7}")
    for key, label in labels.items():
        print(f"{label:<46} {statistics.median(r[key] for r in rounds):>7.1f}")
    vs_direct, best_direct = ratio("castillo", "direct")
    vs_openai, _ = ratio("castillo", "openai")
    openai_cost, _ = ratio("openai", "direct")
    print(f"castillo / server direct   median {vs_direct:.2f} x (best round {best_direct:.2f} x)")
    print(f"castillo / server via openai backend median {vs_openai:.2f} x; openai backend / direct {openai_cost:.2f} x")
    print(f"load average after: {load()}")
    print(
        f"RESULT llamacpp_server {vs_direct:.2f} x llama-server --parallel {args.parallel} direct "
        f"(median of {len(rounds)} rotating rounds; castillo in-process vs the server's own batching)"
    )


if __name__ == "__main__":
    sys.exit(main())
