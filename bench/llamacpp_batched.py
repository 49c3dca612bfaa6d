"""llama.cpp batched sampling: castillo's parallel sequences against the plain loop.

Same model, same prompts, same N, caps and seeds, measured side by side in one process;
three figures of generated tokens per second:

1. baseline: the straightforward loop of N ``Llama.create_completion`` calls per prompt
   (llama-cpp-python's high-level API; it reuses the prompt's KV prefix between calls);
2. castillo: the llamacpp backend's ``generate`` (the N samples of a prompt as parallel
   sequences sharing the prompt's KV cache, slots refilled as sequences finish);
3. ceiling: the same batched decode steps with no sampling at all (every sequence fed a
   constant token and stopped at the length castillo's run gave it), i.e. llama.cpp's
   own speed for that schedule on this machine.

A reference line gives the raw decode rate of ``n_parallel`` always-full sequences.
The length distributions of the baseline and castillo runs are printed too: they must
agree in kind (same model, same sampling settings; different random streams).

    python bench/llamacpp_batched.py                 # 20 prompts x N=10, cap 128
    python bench/llamacpp_batched.py --quant Q4_0    # the same model re-quantized to Q4_0
    python bench/llamacpp_batched.py --quick         # 4 prompts x N=4, cap 32 (a smoke test)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "IQ4_NL": 25}


def load_prompts(count: int) -> tuple[str, list[Any]]:
    """The first ``count`` HumanEval prompts (the tiny corpus where it is not installed)."""
    from castillo_core import CorpusSelection, Prompt
    from castillo_core.plugins import get_plugins

    plugins = get_plugins()
    for name, options in (("humaneval", {}), ("tiny", {"size": count})):
        try:
            cls = plugins.corpus(name)
        except Exception:  # noqa: BLE001 - fall back to the built-in corpus
            continue
        prompts = [
            p for p in cls(CorpusSelection(corpus=name, options=options)).iter_prompts() if isinstance(p, Prompt)
        ]
        return name, prompts[:count]
    raise SystemExit("no corpus found")


def requantize(source: Path, quant: str) -> Path:
    """``source`` re-quantized to ``quant`` (cached next to the pytest cache; not committed)."""
    import llama_cpp as L

    out_dir = REPO / ".cache" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{source.stem.split('.')[0]}.{quant}.gguf"
    if not out.exists():
        params = L.llama_model_quantize_default_params()
        params.ftype = FTYPES[quant]
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 1
        tmp = out.with_suffix(".tmp")
        if L.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
            raise SystemExit(f"could not re-quantize {source} to {quant}")
        tmp.replace(out)
    return out


class _Clock:
    """Wall-clock and process CPU seconds of one run.

    With one thread, CPU seconds are the time llama.cpp actually computed: on a shared,
    loaded machine they drift far less than wall-clock seconds, which also count the
    time spent waiting for a core.
    """

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_baseline(
    path: Path, requests: list[Any], cap: int, threads: int
) -> tuple[tuple[float, float], list[tuple[int, str]]]:
    """N create_completion calls per prompt; lengths counted as castillo counts them."""
    from llama_cpp import Llama

    longest = max(len(r.rendered.payload) for r in requests)
    llm = Llama(
        model_path=str(path),
        n_ctx=longest + cap + 8,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )
    out: list[tuple[int, str]] = []
    clock = _Clock()
    for request in requests:
        for i in range(request.n):
            result = llm.create_completion(
                prompt=list(request.rendered.payload),
                max_tokens=cap,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                seed=request.seed + i,
            )
            reason = result["choices"][0]["finish_reason"]
            tokens = result["usage"]["completion_tokens"]
            # create_completion leaves the end token out of its count; castillo counts it once.
            out.append((tokens + 1 if reason == "stop" else tokens, "stop" if reason == "stop" else "length"))
    seconds = clock.stop()
    llm.close()
    return seconds, out


def run_castillo(backend: Any, requests: list[Any], config: Any) -> tuple[tuple[float, float], list[Any]]:
    settings = backend.sampling(config)
    clock = _Clock()
    results = list(backend.generate(requests, settings, config))
    return clock.stop(), results


def run_ceiling(backend: Any, requests: list[Any], config: Any, results: list[Any]) -> tuple[float, float]:
    """The same schedule with sampling replaced by a constant token and recorded lengths."""
    from castillo_llamacpp.batched import BatchedGenerator

    targets = {(r.key, c.sample_index): (c.output_tokens, c.finish_reason) for r in results for c in r.completions}
    token = backend._model.tokenize(" the")[0]

    class NoSampling(BatchedGenerator):
        def new_sampler(self, job: Any, index: int) -> None:
            return None

        def pick(self, seq: Any) -> int:
            return token

        def finish_reason(self, seq: Any, token: int) -> Any:
            length, reason = targets[(seq.job.request.key, seq.index)]
            return reason if len(seq.generated) >= length else None

    ctx, holders = backend._context_for(requests, config)
    generator = NoSampling(backend._model, ctx, backend.options.n_parallel, holders)
    clock = _Clock()
    list(generator.run(requests, backend.sampling(config), config.max_new_tokens))
    return clock.stop()


def raw_decode_rate(backend: Any, parallel: int, steps: int = 48) -> float:
    """Decode rate of ``parallel`` sequences that never finish (the machine's best case)."""
    from castillo_llamacpp._llama import Batch

    ctx = backend._ctx
    batch = Batch(ctx.n_batch)
    start = time.perf_counter()
    for step in range(steps):
        batch.clear()
        for seq in range(parallel):
            batch.add(100 + seq, step, seq, True)
        ctx.decode(batch)
    import llama_cpp as L

    L.llama_synchronize(ctx.handle)
    seconds = time.perf_counter() - start
    batch.free()
    ctx.clear()
    return parallel * steps / seconds


def _lengths(pairs: list[tuple[int, str]]) -> str:
    lengths = [n for n, _ in pairs]
    capped = sum(reason == "length" for _, reason in pairs) / len(pairs)
    return f"mean {statistics.mean(lengths):6.1f}  std {statistics.pstdev(lengths):6.1f}  capped {100 * capped:5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="alias or GGUF path (default: the bundled SmolLM2)")
    parser.add_argument("--quant", choices=sorted(FTYPES), help="re-quantize the model first (e.g. Q4_0)")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=16, help="castillo's n_parallel")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating the order of the three runs")
    parser.add_argument("--quick", action="store_true", help="4 prompts x N=4, cap 32")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n, args.max_new_tokens = 4, 4, 32
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    from castillo_llamacpp import _llama, models
    from castillo_llamacpp.backend import LlamaCppBackend

    from castillo_core import GenerationConfig, GenerationRequest, ModelSpec, prompt_seed

    threads = args.threads or _llama.default_threads()
    path = models.fetch(models.resolve(args.model), None)
    if args.quant:
        path = requantize(path, args.quant)
    corpus, prompts = load_prompts(args.prompts)
    config = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
    options = {"n_threads": threads, "n_parallel": args.parallel}
    backend = LlamaCppBackend(ModelSpec(backend="llamacpp", model=str(path), options=options))
    info = backend.open()
    rendered = backend.render(prompts, config.max_prompt_tokens)
    requests = [
        GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(config.seed, p.prompt_id, config.n), n=config.n)
        for i, (p, r) in enumerate(zip(prompts, rendered, strict=True))
    ]
    print(
        f"model {path.name} ({info.dtype}), {len(requests)} {corpus} prompts x N={config.n}, "
        f"cap {config.max_new_tokens}, {threads} threads, n_parallel {args.parallel}",
        flush=True,
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {info.hardware}", flush=True)

    seconds = {"baseline": [0.0, 0.0], "castillo": [0.0, 0.0], "ceiling": [0.0, 0.0]}
    base: list[tuple[int, str]] = []
    results: list[Any] = []

    def add(name: str, clock: tuple[float, float]) -> None:
        seconds[name][0] += clock[0]
        seconds[name][1] += clock[1]
        print(f"  {name} done in {clock[0]:.1f} s ({clock[1]:.1f} s CPU)", flush=True)

    for round_ in range(args.rounds):  # A B C, then C B A: drift on a shared machine cancels out
        order = ("baseline", "castillo", "ceiling") if round_ % 2 == 0 else ("ceiling", "castillo", "baseline")
        for name in order:
            if name == "baseline":
                clock, base = run_baseline(path, requests, config.max_new_tokens, threads)
            elif name == "castillo":
                clock, results = run_castillo(backend, requests, config)
                stats = backend.generator.stats
            else:
                clock = run_ceiling(backend, requests, config, results)
            add(name, clock)
    raw = raw_decode_rate(backend, args.parallel)
    raw_one = raw_decode_rate(backend, 1)
    backend.close()

    cast = [(c.output_tokens, c.finish_reason) for r in sorted(results, key=lambda r: r.key) for c in r.completions]
    tokens = {"baseline": sum(n for n, _ in base), "castillo": sum(n for n, _ in cast)}
    tokens["ceiling"] = tokens["castillo"]
    wall = {k: args.rounds * tokens[k] / v[0] for k, v in seconds.items()}
    cpu = {k: args.rounds * tokens[k] / v[1] for k, v in seconds.items()}
    labels = {
        "baseline": "baseline: N x create_completion",
        "castillo": "castillo: batched sampling",
        "ceiling": "ceiling: same steps, no sampling",
    }
    print()
    print(f"{'run':<34} {'tokens':>7} {'wall s':>7} {'tok/s':>7} {'CPU s':>7} {'tok/CPU s':>9}  lengths")
    for name, label in labels.items():
        lengths = _lengths(base) if name == "baseline" else _lengths(cast) if name == "castillo" else ""
        print(
            f"{label:<34} {tokens[name]:>7} {seconds[name][0]:>7.1f} {wall[name]:>7.1f} "
            f"{seconds[name][1]:>7.1f} {cpu[name]:>9.1f}  {lengths}"
        )
    # What llama.cpp gains from batching on this machine and format bounds castillo / baseline.
    print(f"{'raw decode, full batch (ref.)':<34} {'':>7} {'':>7} {raw:>7.1f}")
    print(f"{'raw decode, 1 sequence (ref.)':<34} {'':>7} {'':>7} {raw_one:>7.1f}")
    print()
    cast_s = seconds["castillo"][0] / args.rounds
    print(
        f"castillo: decode {100 * stats.decode_s / cast_s:.0f}% of its wall time, sampling and bookkeeping "
        f"{100 * stats.sample_s / cast_s:.0f}%, {stats.mean_running:.1f} of {args.parallel} slots busy on average, "
        f"{stats.prompt_tokens} prompt tokens evaluated for {len(requests)} prompts x N={config.n}"
    )
    for clock_name, rate in (("wall", wall), ("CPU", cpu)):
        print(
            f"{clock_name:>4} clock: castillo / baseline {rate['castillo'] / rate['baseline']:.2f} x, "
            f"castillo / ceiling {100 * rate['castillo'] / rate['ceiling']:.0f}%"
        )
    # One thread: CPU seconds are what llama.cpp computed, steadier than wall time on a shared machine.
    chosen, which = (cpu, "CPU") if threads == 1 else (wall, "wall")
    print(f"(RESULT from the {which} clock)")
    ratio = chosen["castillo"] / chosen["baseline"]
    print(f"RESULT llamacpp_batched {ratio:.2f} x (goal >= 2x baseline, >= 85% of ceiling)")


if __name__ == "__main__":
    sys.exit(main())
