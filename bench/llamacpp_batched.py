"""llama.cpp batched sampling: castillo against the plain loop and against llama.cpp's raw limit.

Same model, prompts, N, cap and seeds, measured side by side in one process over several
rounds whose order rotates (a load spike hits a different run each round):

1. baseline: the straightforward loop of N ``Llama.create_completion`` calls per prompt
   (llama-cpp-python's high-level API; it reuses the prompt's KV prefix between calls);
2. castillo: the llamacpp backend's ``generate`` (a prompt's N samples as parallel
   sequences sharing its KV cells, slots refilled as sequences finish);
3. raw: llama.cpp's low-level API alone, no castillo code and no sampling (the ceiling):
   - decode: ``S`` sequences over a shared prefix of the prompts' mean length, ``cap``
     steps of one token each, logits for every row, ``S`` chosen by a sweep in round 0;
   - prefill: every prompt decoded once, in one ``llama_decode`` per ``n_batch`` tokens.
   The *decode ceiling* is the best sweep rate (what no scheduler can beat while it
   generates); the *job ceiling* is the same generated tokens at that rate plus the
   prompts' raw prefill time (what no scheduler can beat on the whole job, since every
   prompt must be evaluated once).

Every figure is generated tokens per second (the end token counted once, as castillo
counts it). The headline ratios are medians over rounds of the ratios taken within each
round; the best round is printed beside them, never instead.

    python bench/llamacpp_batched.py                        # 20 prompts x N=10, cap 64, 3 rounds
    python bench/llamacpp_batched.py --parallel 32 --rounds 5
    python bench/llamacpp_batched.py --quant Q4_0           # the same model re-quantized to Q4_0
    python bench/llamacpp_batched.py --quick                # 4 prompts x N=4, cap 16, 1 round (smoke test)
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
SWEEP = (1, 8, 16, 24, 32, 48)
FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def machine() -> str:
    """CPU model, the SIMD flags llama.cpp's kernels depend on, and cores: every result names them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    present = " ".join(f for f in FLAGS if f in flags) or "unknown"
    return f"{model}, {os.cpu_count()} cores, flags: {present}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
    """``source`` re-quantized to ``quant`` (cached under .cache/bench; not committed)."""
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


# -- 1. the baseline: N create_completion calls per prompt ----------------------------------


def run_baseline(path: Path, requests: list[Any], cap: int, threads: int) -> tuple[float, list[tuple[int, str]]]:
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
    start = time.perf_counter()
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
    seconds = time.perf_counter() - start
    llm.close()
    return seconds, out


# -- 2. castillo ----------------------------------------------------------------------------


def run_castillo(backend: Any, requests: list[Any], config: Any) -> tuple[float, list[Any]]:
    settings = backend.sampling(config)
    start = time.perf_counter()
    results = list(backend.generate(requests, settings, config))
    return time.perf_counter() - start, results


# -- 3. the raw ceiling: llama.cpp's low-level API only ------------------------------------


class Raw:
    """llama.cpp's C API through ctypes and nothing else: a model, contexts, batches."""

    def __init__(self, path: Path, threads: int, n_batch: int) -> None:
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
        self.threads = threads
        self.n_batch = n_batch

    def context(self, n_ctx: int, n_seq: int) -> Any:
        L = self.L
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = min(self.n_batch, 512)
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = True
        return L.llama_init_from_model(self.model, params)

    def _fill(self, batch: Any, tokens: list[int], start: int, seq: int, last_logits: bool) -> None:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = last_logits and i == len(tokens) - 1
        batch.n_tokens = len(tokens)

    def _prefill(self, ctx: Any, batch: Any, tokens: list[int], seq: int) -> None:
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self._fill(batch, chunk, start, seq, start + len(chunk) == len(tokens))
            if self.L.llama_decode(ctx, batch) != 0:
                raise SystemExit("raw prefill failed")

    def prefill_seconds(self, prompts: list[list[int]]) -> float:
        """Each prompt evaluated once (its logits asked for the last token only), cache cleared between."""
        L = self.L
        ctx = self.context(256 * (max(map(len, prompts)) // 256 + 1), 1)
        batch = L.llama_batch_init(self.n_batch, 0, 1)
        memory = L.llama_get_memory(ctx)
        seconds = 0.0
        for tokens in prompts:
            start = time.perf_counter()
            self._prefill(ctx, batch, tokens, 0)
            L.llama_synchronize(ctx)
            seconds += time.perf_counter() - start
            L.llama_memory_clear(memory, True)
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        return seconds

    def decode_rate(self, sequences: int, prefix: list[int], steps: int) -> float:
        """Tokens/s of ``sequences`` always-running sequences after a shared prefix (logits for every row)."""
        L = self.L
        n_ctx = 256 * ((len(prefix) + sequences * steps) // 256 + 1)
        ctx = self.context(n_ctx, sequences)
        batch = L.llama_batch_init(max(self.n_batch, sequences), 0, 1)
        self._prefill(ctx, batch, prefix, 0)
        memory = L.llama_get_memory(ctx)
        for seq in range(1, sequences):
            L.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        token = prefix[-1]
        start = time.perf_counter()
        for step in range(steps):
            for seq in range(sequences):
                batch.token[seq], batch.pos[seq], batch.n_seq_id[seq] = token, len(prefix) + step, 1
                batch.seq_id[seq][0] = seq
                batch.logits[seq] = True
            batch.n_tokens = sequences
            if L.llama_decode(ctx, batch) != 0:
                raise SystemExit(f"raw decode failed at {sequences} sequences")
        L.llama_synchronize(ctx)
        seconds = time.perf_counter() - start
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        return sequences * steps / seconds

    def close(self) -> None:
        self.L.llama_model_free(self.model)


# -- the report -----------------------------------------------------------------------------


def _lengths(pairs: list[tuple[int, str]]) -> str:
    lengths = [n for n, _ in pairs]
    capped = sum(reason == "length" for _, reason in pairs) / len(pairs)
    return f"mean {statistics.mean(lengths):5.1f} std {statistics.pstdev(lengths):5.1f} capped {100 * capped:5.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="alias or GGUF path (default: the bundled SmolLM2)")
    parser.add_argument("--quant", choices=sorted(FTYPES), help="re-quantize the model first (e.g. Q4_0)")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=None, help="castillo's n_parallel (default: the backend's)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all this process may use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the order of the runs rotates")
    parser.add_argument("--quick", action="store_true", help="4 prompts x N=4, cap 16, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.rounds = 4, 4, 16, 1
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    from castillo_llamacpp import _llama, models
    from castillo_llamacpp.backend import LlamaCppBackend

    from castillo_core import GenerationConfig, ModelSpec, build_requests

    threads = args.threads or _llama.default_threads()
    path = models.fetch(models.resolve(args.model), None)
    if args.quant:
        path = requantize(path, args.quant)
    corpus, prompts = load_prompts(args.prompts)
    config = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
    options: dict[str, Any] = {"n_threads": threads}
    if args.parallel:
        options["n_parallel"] = args.parallel
    backend = LlamaCppBackend(ModelSpec(backend="llamacpp", model=str(path), options=options))
    info = backend.open()
    parallel = backend.options.n_parallel
    rendered = backend.render(prompts, config.max_prompt_tokens)
    requests = build_requests(prompts, rendered, config, "llamacpp")
    payloads = [list(r.payload) for r in rendered]
    mean_prompt = round(statistics.mean(map(len, payloads)))
    prefix = (payloads[0] * (mean_prompt // len(payloads[0]) + 1))[:mean_prompt]
    n_batch = max(512, parallel + 256)  # what castillo's context uses
    raw = Raw(path, threads, n_batch)
    sweep = sorted(set(SWEEP) | {parallel})
    print(
        f"model {path.name} ({info.dtype}), {len(requests)} {corpus} prompts x N={config.n} (mean prompt "
        f"{mean_prompt} tokens), cap {config.max_new_tokens}, {threads} threads, castillo n_parallel {parallel}, "
        f"{args.rounds} rounds",
        flush=True,
    )
    print(f"machine: {machine()}", flush=True)
    print(f"llama.cpp: llama-cpp-python {_llama.library_version()}; {info.hardware}", flush=True)
    print(f"load average before: {load()}", flush=True)

    rounds: list[dict[str, float]] = []
    base: list[tuple[int, str]] = []
    results: list[Any] = []
    best_s = parallel
    stats: Any = None
    order = ["baseline", "castillo", "raw"]
    for round_ in range(args.rounds):
        seconds: dict[str, float] = {}
        rates: dict[int, float] = {}
        for name in order:
            if name == "baseline":
                seconds["baseline"], base = run_baseline(path, requests, config.max_new_tokens, threads)
            elif name == "castillo":
                seconds["castillo"], results = run_castillo(backend, requests, config)
                stats = backend.generator.stats
            else:
                sizes = sweep if round_ == 0 else sorted({1, best_s, parallel})
                rates = {s: raw.decode_rate(s, prefix, config.max_new_tokens) for s in sizes}
                if round_ == 0:
                    best_s = max(rates, key=rates.__getitem__)
                    print("  raw decode sweep: " + ", ".join(f"{s}: {r:.1f}" for s, r in rates.items()), flush=True)
                seconds["prefill"] = raw.prefill_seconds(payloads)
        order = order[1:] + order[:1]  # rotate: each run goes first, second, third in turn
        generated = sum(c.output_tokens for r in results for c in r.completions)
        base_tokens = sum(n for n, _ in base)
        row = {
            "baseline": base_tokens / seconds["baseline"],
            "castillo": generated / seconds["castillo"],
            "decode": max(rate for s, rate in rates.items() if s > 1),  # the best batched rate this round
            "decode_par": rates[parallel],
            "decode_one": rates[1],
            "prefill_s": seconds["prefill"],
        }
        row["job"] = generated / (seconds["prefill"] + generated / row["decode"])
        rounds.append(row)
        print(
            f"  round {round_}: baseline {row['baseline']:.1f}, castillo {row['castillo']:.1f}, raw decode "
            f"{row['decode']:.1f} (best of {sorted(s for s in rates if s > 1)} sequences; "
            f"{row['decode_one']:.1f} at 1), job ceiling {row['job']:.1f} tok/s; load {load()}",
            flush=True,
        )
    raw.close()
    backend.close()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratio(a: str, b: str) -> tuple[float, float]:
        values = [r[a] / r[b] for r in rounds]
        return statistics.median(values), max(values)

    cast = [(c.output_tokens, c.finish_reason) for r in sorted(results, key=lambda r: r.key) for c in r.completions]
    print()
    print(f"{'run (median of ' + str(len(rounds)) + ' rounds)':<48} {'tok/s':>7}  lengths")
    print(f"{'baseline: N x create_completion':<48} {med('baseline'):>7.1f}  {_lengths(base)}")
    print(f"{'castillo: batched sampling':<48} {med('castillo'):>7.1f}  {_lengths(cast)}")
    print(f"{'raw decode, best batch (decode ceiling)':<48} {med('decode'):>7.1f}")
    print(f"{'raw decode, ' + str(parallel) + ' sequences (castillo n_parallel)':<48} {med('decode_par'):>7.1f}")
    print(f"{'raw decode, 1 sequence':<48} {med('decode_one'):>7.1f}")
    print(f"{'raw job: prefill + decode ceiling (job ceiling)':<48} {med('job'):>7.1f}")
    print()
    cast_s = sum(c.output_tokens for r in results for c in r.completions) / rounds[-1]["castillo"]
    print(
        f"castillo (last round): llama_decode {100 * stats.decode_s / cast_s:.0f}% of its wall time, sampling and "
        f"bookkeeping {100 * stats.sample_s / cast_s:.0f}%, {stats.mean_running:.1f} of {parallel} slots busy on "
        f"average, {stats.prompt_tokens} prompt tokens evaluated; raw prefill of the prompts "
        f"{med('prefill_s'):.1f} s"
    )
    figures = {
        "castillo / baseline": ratio("castillo", "baseline"),
        "castillo / decode ceiling": ratio("castillo", "decode"),
        "castillo / job ceiling": ratio("castillo", "job"),
        "raw batched / raw 1 sequence": ratio("decode", "decode_one"),
    }
    for label, (median, best) in figures.items():
        print(f"{label:<30} median {median:5.2f} x   (best round {best:.2f} x)")
    print(f"load average after: {load()}")
    vs_base, vs_ceiling = figures["castillo / baseline"][0], figures["castillo / decode ceiling"][0]
    print(
        f"RESULT llamacpp_batched {vs_base:.2f} x baseline, {100 * vs_ceiling:.0f}% of the raw decode ceiling, "
        f"{100 * figures['castillo / job ceiling'][0]:.0f}% of the job ceiling (medians of {len(rounds)} "
        f"rotating rounds; goals >= 2x, >= 90%)"
    )


if __name__ == "__main__":
    sys.exit(main())
