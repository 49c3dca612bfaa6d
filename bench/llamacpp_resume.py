"""llama.cpp resumes: what the deterministic mode costs, and whether resumes are bit-identical.

For each mode (the default scheduler, and ``-B deterministic=true``) the same prompts, N,
cap and seeds run:

1. uninterrupted: every prompt in one ``generate`` call of a fresh backend, timed (the
   modes alternate, A B then B A, so a shared machine's drift cancels out);
2. resumed: the prompts split at a few points, the first part in one fresh backend and the
   rest in another (exactly what a killed run and its resume hand the backend), compared
   per prompt and sample with the uninterrupted run of the same mode.

The table gives tokens/s of each mode and how many lengths (and texts) the resumes
changed; the RESULT line is the deterministic mode's throughput relative to the default.

    python bench/llamacpp_resume.py                  # SmolLM2 Q4_1, 8 prompts x N=10, cap 384, 1 thread
    python bench/llamacpp_resume.py --quant Q4_0     # re-quantized to Q4_0 (batching pays more there)
    python bench/llamacpp_resume.py --quick          # 4 prompts x N=4, cap 24 (a smoke test)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODES = {"default": False, "deterministic": True}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def generate(path: Path, options: dict[str, Any], requests: list[Any], config: Any) -> tuple[dict, float, float]:
    """One fresh backend, one ``generate`` call: {prompt_id: [(length, text)]}, wall and CPU seconds."""
    from castillo_llamacpp.backend import LlamaCppBackend

    from castillo_core import ModelSpec

    backend = LlamaCppBackend(ModelSpec(backend="llamacpp", model=str(path), options=options))
    backend.open()
    try:
        wall, cpu = _clock()
        results = list(backend.generate(requests, backend.sampling(config), config))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        backend.close()
    by_key = {r.key: r for r in requests}
    out = {
        by_key[r.key].prompt.prompt_id: [(c.output_tokens, c.text, c.finish_reason) for c in r.completions]
        for r in results
    }
    return out, wall, cpu


def differences(reference: dict, other: dict) -> tuple[int, int]:
    """(lengths, samples) that differ between two runs of the same prompts."""
    lengths = samples = 0
    for prompt_id, ref in reference.items():
        for a, b in zip(ref, other[prompt_id], strict=True):
            lengths += a[0] != b[0]
            samples += a[:2] != b[:2]
    return lengths, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="alias or GGUF path (default: the bundled SmolLM2)")
    parser.add_argument("--quant", help="re-quantize the model first (Q4_0, Q8_0, ...; see llamacpp_batched.py)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--parallel", type=int, default=16, help="n_parallel")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: CPU seconds are steady)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="timed uninterrupted runs per mode (alternating)")
    parser.add_argument("--splits", default="1/2", help="where the resumes cut the prompt list")
    parser.add_argument("--quick", action="store_true", help="4 prompts x N=4, cap 24, one round")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.rounds = 4, 4, 24, 1
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    sys.path.insert(0, str(REPO / "bench"))
    from castillo_llamacpp import models
    from castillo_llamacpp.backend import LlamaCppBackend
    from llamacpp_batched import load_prompts, requantize

    from castillo_core import GenerationConfig, ModelSpec, build_requests

    path = models.fetch(models.resolve(args.model), None)
    if args.quant:
        path = requantize(path, args.quant)
    corpus, prompts = load_prompts(args.prompts)
    config = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed)
    base = {"n_threads": args.threads, "n_parallel": args.parallel}
    probe = LlamaCppBackend(ModelSpec(backend="llamacpp", model=str(path), options=base))
    info = probe.open()
    requests = build_requests(prompts, probe.render(prompts, config.max_prompt_tokens), config, backend="llamacpp")
    probe.close()
    fractions = [Fraction(s) for s in args.splits.split(",")]
    cuts = sorted({max(1, min(len(requests) - 1, round(f * len(requests)))) for f in fractions})
    print(
        f"model {path.name} ({info.dtype}), {len(requests)} {corpus} prompts x N={config.n}, cap "
        f"{config.max_new_tokens}, {args.threads} thread(s), n_parallel {args.parallel}, resumes cut at {cuts}",
        flush=True,
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {info.hardware}", flush=True)

    seconds = {mode: [0.0, 0.0] for mode in MODES}
    reference: dict[str, dict] = {}
    for round_ in range(args.rounds):
        order = list(MODES) if round_ % 2 == 0 else list(reversed(MODES))
        for mode in order:
            out, wall, cpu = generate(path, {**base, "deterministic": MODES[mode]}, requests, config)
            seconds[mode][0] += wall
            seconds[mode][1] += cpu
            if mode in reference and out != reference[mode]:
                print(f"  warning: two uninterrupted {mode} runs differ: {differences(reference[mode], out)}")
            reference.setdefault(mode, out)
            print(f"  round {round_} {mode}: {wall:.1f} s ({cpu:.1f} s CPU)", flush=True)

    resumed: dict[str, list[tuple[int, int, int]]] = {mode: [] for mode in MODES}
    for mode, deterministic in MODES.items():
        options = {**base, "deterministic": deterministic}
        for cut in cuts:
            first, _, _ = generate(path, options, requests[:cut], config)
            rest, _, _ = generate(path, options, requests[cut:], config)
            resumed[mode].append((cut, *differences(reference[mode], {**first, **rest})))
            print(f"  {mode} resumed after {cut} prompts: {resumed[mode][-1][1:]}", flush=True)

    samples = len(requests) * config.n
    tokens = {mode: sum(c[0] for comps in reference[mode].values() for c in comps) for mode in MODES}
    capped = {
        mode: sum(c[2] == "length" for comps in reference[mode].values() for c in comps) / samples for mode in MODES
    }
    rate = {
        mode: {"wall": args.rounds * tokens[mode] / s[0], "CPU": args.rounds * tokens[mode] / s[1]}
        for mode, s in seconds.items()
    }
    print()
    print(
        f"{'mode':<14} {'tokens':>7} {'capped':>6} {'tok/s':>7} {'tok/CPU s':>9}  "
        f"resumes: lengths / texts changed (of {samples})"
    )
    for mode in MODES:
        diffs = ", ".join(f"cut {cut}: {lengths} / {texts}" for cut, lengths, texts in resumed[mode])
        print(
            f"{mode:<14} {tokens[mode]:>7} {100 * capped[mode]:>5.0f}% {rate[mode]['wall']:>7.1f} "
            f"{rate[mode]['CPU']:>9.1f}  {diffs}"
        )
    identical = {mode: all(t == 0 for _, _, t in resumed[mode]) for mode in MODES}
    which = "CPU" if args.threads == 1 else "wall"
    ratio = rate["deterministic"][which] / rate["default"][which]
    print()
    print(
        f"deterministic / default tokens/s: {rate['deterministic']['wall'] / rate['default']['wall']:.2f} x wall, "
        f"{rate['deterministic']['CPU'] / rate['default']['CPU']:.2f} x CPU (RESULT from the {which} clock)"
    )
    print(
        f"resumes bit-identical: default {'yes' if identical['default'] else 'no'}, "
        f"deterministic {'yes' if identical['deterministic'] else 'no'}"
    )
    print(
        f"RESULT llamacpp_resume {ratio:.2f} x tokens/s of the default mode (goal: deterministic resumes "
        f"bit-identical [{'yes' if identical['deterministic'] else 'NO'}], cost measured)"
    )


if __name__ == "__main__":
    sys.exit(main())
