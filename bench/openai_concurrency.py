"""The openai backend against a local llama.cpp server: throughput and castillo's overhead.

Starts llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) on
127.0.0.1 with the tiny GGUF the tests write (or ``--model PATH``), then measures, side
by side in one process and alternating A and B in every round:

- A, bare: a plain ``httpx.AsyncClient`` loop sending the very same request bodies
  (same prompts, seeds, caps) with the same concurrency, reading ``usage`` and nothing
  else: the least any client can do;
- B, castillo: the backend's ``generate`` (bounded concurrency, retries armed,
  responses validated into ``Completion`` records, prompts handed over as they finish).

at concurrency 1 and 8. Completions/s is B's; the overhead per request is B minus A,
in wall time and in this process's CPU time (the client's own work; the server is
another process, so CPU time is the figure that a shared, noisy machine disturbs least).

    python bench/openai_concurrency.py                  # 16 prompts x N=4, cap 32, 3 rounds
    python bench/openai_concurrency.py --model ~/m.gguf --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _prompts(count: int) -> list[Any]:
    from castillo_core import CorpusSelection, Prompt
    from castillo_core.testing import TinyCorpus

    corpus = TinyCorpus(CorpusSelection(corpus="tiny", options={"size": count}))
    return [p for p in corpus.iter_prompts() if isinstance(p, Prompt)]


def _requests(prompts: list[Any], n: int, seed: int) -> list[Any]:
    from castillo_core import GenerationRequest, Rendered, prompt_seed

    return [
        GenerationRequest(key=i, prompt=p, rendered=Rendered(input_size=0), seed=prompt_seed(seed, p.prompt_id, n), n=n)
        for i, p in enumerate(prompts)
    ]


def _bodies(requests: list[Any], cap: int) -> list[dict[str, Any]]:
    """The bodies castillo sends (same fields and values), built up front for the bare loop."""
    return [
        {
            "model": "tiny",
            "max_tokens": cap,
            "temperature": 1.0,
            "top_p": 1.0,
            "stream": False,
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "repeat_penalty": 1.0,
            "n": 1,
            "seed": r.seed + i,
            "messages": [{"role": "user", "content": r.prompt.prompt_text}],
        }
        for r in requests
        for i in range(r.n)
    ]


async def _bare(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, float]:
    """A: the plainest async loop; (wall s, CPU s) of the loop alone.

    The client is made and its connection opened before the clock starts, as castillo's
    is (its ``open`` lists the server's models), so both pay only for the requests.
    """
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        (await client.get("/models")).raise_for_status()
        todo = iter(bodies)
        tokens = 0

        async def worker() -> None:
            nonlocal tokens
            for body in todo:
                response = await client.post("/chat/completions", json=body)
                tokens += response.json()["usage"]["completion_tokens"]

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - wall, time.process_time() - cpu


def _castillo(base_url: str, requests: list[Any], concurrency: int, cap: int) -> tuple[float, float, int]:
    """B: the backend's generate; (wall s, CPU s, completions) of generate alone."""
    from castillo_openai.backend import OpenAIBackend

    from castillo_core import GenerationConfig, ModelSpec

    backend = OpenAIBackend(
        ModelSpec(backend="openai", model="tiny", options={"base_url": base_url, "concurrency": concurrency})
    )
    backend.open()
    try:
        gen = GenerationConfig(n=requests[0].n, max_new_tokens=cap)
        settings = backend.sampling(gen)
        wall, cpu = time.perf_counter(), time.process_time()
        done = sum(len(r.completions) for r in backend.generate(requests, settings, gen))
        return time.perf_counter() - wall, time.process_time() - cpu, done
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the tests' tiny random GGUF)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="the server's threads (leave a core to the client)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    from tests.fixtures.openai_server import LlamaServer
    from tests.fixtures.tiny_gguf import cached_tiny_gguf

    cache = REPO / ".pytest_cache" / "d" / "castillo-llamacpp-tiny"
    cache.mkdir(parents=True, exist_ok=True)
    model = args.model.expanduser() if args.model else cached_tiny_gguf(cache)
    server = LlamaServer(model, cache / "bench-server.log", threads=args.threads)
    server.start()
    prompts = _prompts(args.prompts)
    requests = _requests(prompts, args.n, seed=0)
    bodies = _bodies(requests, args.max_new_tokens)
    total = len(bodies)
    print(f"model {model.name}; {platform.processor() or platform.machine()}; server threads {args.threads}")
    print(f"{args.prompts} prompts x N={args.n} = {total} requests per run, cap {args.max_new_tokens}\n")
    rows: dict[int, dict[str, list[float]]] = {c: {"a": [], "a_cpu": [], "b": [], "b_cpu": []} for c in (1, 8)}
    try:
        _castillo(server.base_url, requests[:2], 2, args.max_new_tokens)  # warm the server up
        print("round  conc   bare s  castillo s   bare CPU ms/req  castillo CPU ms/req")
        for rnd in range(args.rounds):
            for conc in (1, 8):
                order = ("a", "b") if rnd % 2 == 0 else ("b", "a")
                for which in order:
                    if which == "a":
                        wall_s, cpu_s = asyncio.run(_bare(server.base_url, bodies, conc))
                        rows[conc]["a"].append(wall_s)
                        rows[conc]["a_cpu"].append(cpu_s)
                    else:
                        wall_s, cpu_s, done = _castillo(server.base_url, requests, conc, args.max_new_tokens)
                        assert done == total
                        rows[conc]["b"].append(wall_s)
                        rows[conc]["b_cpu"].append(cpu_s)
                r = rows[conc]
                print(
                    f"{rnd:>5}  {conc:>4}  {r['a'][-1]:>7.2f}  {r['b'][-1]:>10.2f}   "
                    f"{1000 * r['a_cpu'][-1] / total:>15.2f}  {1000 * r['b_cpu'][-1] / total:>19.2f}"
                )
    finally:
        server.stop()

    print("\nmedians   completions/s bare  castillo   overhead ms/request (paired B-A): wall     CPU")
    figures = {}
    for conc, r in rows.items():
        a, b = statistics.median(r["a"]), statistics.median(r["b"])
        # Paired: B minus A of the same round (they ran back to back), then the median.
        wall_ms = 1000 * statistics.median(y - x for x, y in zip(r["a"], r["b"], strict=True)) / total
        cpu_ms = 1000 * statistics.median(y - x for x, y in zip(r["a_cpu"], r["b_cpu"], strict=True)) / total
        figures[conc] = (total / b, wall_ms, cpu_ms)
        print(f"conc {conc:>2}   {total / a:>18.1f}  {total / b:>8.1f}   {wall_ms:>38.2f}  {cpu_ms:>6.2f}")
    cps1, cps8 = figures[1][0], figures[8][0]
    cpu_overhead = max(figures[1][2], figures[8][2])
    print(
        f"RESULT openai_concurrency {cps8:.1f} completions/s at concurrency 8 ({cps1:.1f} at 1; "
        f"castillo overhead {cpu_overhead:+.2f} ms CPU/request over bare httpx) (goal: overhead < 2 ms/request)"
    )


if __name__ == "__main__":
    main()
