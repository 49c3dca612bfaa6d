"""The GPU kit's measurement: castillo's transformers backend against CASTILLO v1's strategy and a bare decode loop.

On the GPU machine it runs through ``bench/gpu/run.sh``, which installs the carried wheels
first (see docs/benchmarks.md, "GPU kit"). ``--cpu`` runs the very same steps with a tiny
model and tiny sizes on the CPU in seconds, so the kit is tested while no GPU is lent
(tests/test_gpu_kit.py).

    bash bench/gpu/run.sh                        # on the GPU machine: Llama-3.2-1B shape, bf16
    python bench/gpu/measure.py --cpu            # here: tiny model, CPU, fp32

What it does, in one process:

1. Builds a random-weight Llama with the shape of Llama-3.2-1B (``--shape 8b``: Llama-3.1-8B)
   on the device in seconds and saves it with a word-level tokenizer over the same vocabulary
   (no download, no real tokenizer: prompts are token ids). Random weights cost exactly what
   trained ones cost per token, so throughput is measured honestly; only the lengths need
   help, through a bias on the end token ``<|eot_id|>``: a residual dimension that no layer
   reads or writes holds a constant, only the end token's output row reads it, and its weight
   is calibrated so that the end token takes a set probability at every step (sampling at
   temperature 1, no top-k or top-p: the log-sum-exp of 128,256 other logits barely moves).
   That probability is chosen so that v1's waste comes out as in v1's own Llama-3.2-1B logs:
   over N=10 samples, the sum of the longest / the sum of the means is 2.48
   (``v1_llama32_1b.json``). Lengths are thus geometric, capped at max_new_tokens (v1's own
   per-prompt lengths were more alike; its 2.48 came from degenerate samples running to its
   15,000 cap).
2. Prompts: random ids with the prompt lengths v1 recorded for Llama-3.2-1B-Instruct (a seeded
   sample of its 1,110 test prompts), each starting with ``<|begin_of_text|>``; plain
   sampling (temperature 1; v1 used 0.6, top_k 50, top_p 0.9 for this model, see above);
   seeds from castillo's ``build_requests``, used by every side.
3. Measures, one after the other on the same loaded model:
   - v1: ``model.generate`` per prompt with the prompt replicated N times
     (``num_return_sequences``), sampling on, outputs decoded; on the first K prompts
     (its rate does not depend on how many prompts it is given: one prompt at a time);
   - castillo: the transformers backend, opened through castillo's plugin registry from the
     saved directory, on the same K prompts and then on all P (cross-prompt continuous batching);
   - ceiling: what the same model does with no sampling bookkeeping at castillo's batch size:
     each prompt prefilled once (batch 1, as castillo does), then bare decode steps of
     ``rows`` sequences with transformers' own cache and argmax, as many steps as castillo's
     tokens need at a full batch, in segments of about twice the mean length.
4. Prints a table (tokens/s, completions/s, peak GPU memory), the ratios castillo/v1 and
   castillo/ceiling, and last ``RESULT gpu_transformers <castillo/v1> x (...)``; ``--json``
   writes every figure.

Sizing for one command under 8 minutes on the GPU machine: ``--budget-s`` (default 400) is
the time this script may take; after the warm-ups it measures v1's time per decode step and
gives v1 at most 40% of what is left, which sets K (at most ``--v1-prompts``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

HERE = Path(__file__).resolve().parent
V1_FILE = HERE / "v1_llama32_1b.json"

# The shapes of the models measured (their config.json, weights random). Llama 3's special ids
# sit at the top of the vocabulary: <|begin_of_text|> = vocab - 256, <|end_of_text|> - 255,
# <|eom_id|> - 248, <|eot_id|> - 247 (128000, 128001, 128008, 128009 for the real models).
SHAPES: dict[str, dict[str, Any]] = {
    "1b": {
        "label": "Llama-3.2-1B",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    },
    "8b": {
        "label": "Llama-3.1-8B",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    },
    "tiny": {
        "label": "tiny Llama (CPU mode)",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 1024,
        "tie_word_embeddings": True,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    },
}
# The end-token bias: residual dimension SIGNAL is 1 in every embedding, and no layer reads it
# (zero input columns) or writes it (zero output rows), so it stays 1 and the model computes as
# before; after the final norm it holds about the same value at every position. The end token's
# output row reads it alone, so its logit is the same everywhere, set by calibration.
SIGNAL = 0


@dataclass
class Side:
    """One measured side: what it produced and how long it took."""

    name: str
    prompts: int
    seconds: float
    lengths: list[int] = field(default_factory=list, repr=False)
    capped: int = 0
    peak_gib: float | None = None
    slots: int = 0  # decode slots spent (v1: rows x steps of each batch)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completions(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def summary(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "lengths"}
        n = max(self.completions, 1)
        mean = self.tokens / n
        std = math.sqrt(sum((x - mean) ** 2 for x in self.lengths) / n) if self.lengths else 0.0
        data.update(
            completions=self.completions,
            tokens=self.tokens,
            tokens_per_s=self.tokens / self.seconds if self.seconds else 0.0,
            completions_per_s=self.completions / self.seconds if self.seconds else 0.0,
            mean_length=mean,
            std_length=std,
            capped_share=self.capped / n,
        )
        return data


# -- parameters -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU mode: tiny model, tiny sizes, fp32 (seconds)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="model shape (default 1b; tiny with --cpu)")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default cuda; cpu with --cpu)")
    parser.add_argument("--dtype", help="bf16, fp16 or fp32 (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--prompts", type=int, help="P: prompts for castillo and the ceiling (default 128; 12 --cpu)")
    parser.add_argument("--v1-prompts", type=int, help="K: at most this many of them for v1 (default 16; 3 --cpu)")
    parser.add_argument("--n", type=int, default=10, help="samples per prompt (v1: 10)")
    parser.add_argument("--max-new-tokens", type=int, help="cap on generated tokens (default 512; 24 --cpu)")
    parser.add_argument("--rows", type=int, help="castillo's max_batch_rows and the ceiling's batch (256; 16 --cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 with --cpu)")
    parser.add_argument("--budget-s", type=float, help="time this script may take (default 400; 120 --cpu)")
    parser.add_argument("--model-dir", type=Path, help="where to write the random model (default: a temp dir)")
    parser.add_argument("--keep-model", action="store_true", help="leave the model directory in place")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    cpu = args.cpu
    defaults = {
        "shape": "tiny" if cpu else "1b",
        "device": "cpu" if cpu else "cuda",
        "prompts": 12 if cpu else 128,
        "v1_prompts": 3 if cpu else 16,
        "max_new_tokens": 24 if cpu else 512,
        "rows": 16 if cpu else 256,
        "threads": 1 if cpu else None,
        "budget_s": 120.0 if cpu else 400.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dtype is None:
        args.dtype = "fp32" if args.device == "cpu" else "bf16"
    args.v1_prompts = max(1, min(args.v1_prompts, args.prompts))
    return args


def v1_reference() -> dict[str, Any]:
    return json.loads(V1_FILE.read_text())


def stop_probability(cap: int, n: int, target: float) -> float:
    """The per-step stop probability p whose capped geometric lengths give sum(max of n)/sum(mean) = target.

    Searched on the branch where the ratio grows with p (from about 1.6 at p = 1/cap towards
    the uncapped harmonic number H_n), so the mean length stays a sizable share of the cap.
    """
    import numpy as np

    steps = np.arange(1, cap + 1)

    def ratio(p: float) -> float:
        survive = (1.0 - p) ** (steps - 1)  # P(length >= k)
        return float((1.0 - (1.0 - survive) ** n).sum() / survive.sum())

    low, high = 0.5 / cap, 30.0 / cap
    if not ratio(low) < target < ratio(high):
        return 2.5 / cap
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if ratio(mid) < target else (low, mid)
    return (low + high) / 2


def expected_lengths(p: float, cap: int, n: int) -> tuple[float, float]:
    """(mean length, mean of the longest of n) for capped geometric lengths with stop probability p."""
    survive = [(1.0 - p) ** k for k in range(cap)]
    return sum(survive), sum(1.0 - (1.0 - s) ** n for s in survive)


# -- the model ------------------------------------------------------------------------------


def special_ids(vocab: int) -> dict[str, int]:
    top = vocab - 256
    return {"bos": top, "end_of_text": top + 1, "eom": top + 8, "eot": top + 9}


def write_tokenizer(path: Path, vocab: int) -> Any:
    """A word-level tokenizer over the whole vocabulary (ids print as ``t<id>``), Llama 3's special names."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = special_ids(vocab)
    names = {
        ids["bos"]: "<|begin_of_text|>",
        ids["end_of_text"]: "<|end_of_text|>",
        ids["eom"]: "<|eom_id|>",
        ids["eot"]: "<|eot_id|>",
    }
    words = {names.get(i, f"t{i}" if i < ids["bos"] else f"<|reserved_special_token_{i}|>"): i for i in range(vocab)}
    backend = Tokenizer(models.WordLevel(words, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        additional_special_tokens=["<|end_of_text|>", "<|eom_id|>"],
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def build_model(shape: str, device: str, dtype: Any, seed: int) -> Any:
    """A random-weight Llama of ``shape`` on ``device``, its end token wired to the SIGNAL dimension (bias 0)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = {k: v for k, v in SHAPES[shape].items() if k != "label"}
    ids = special_ids(spec["vocab_size"])
    stops = [ids["end_of_text"], ids["eom"], ids["eot"]]
    config = LlamaConfig(**spec, bos_token_id=ids["bos"], eos_token_id=stops, dtype=dtype)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        model.get_input_embeddings().weight[:, SIGNAL] = 1.0  # tied: every logit gains the same, harmless
        if not config.tie_word_embeddings:
            head[:, SIGNAL] = 0.0
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj, mlp.gate_proj, mlp.up_proj):
                projection.weight[:, SIGNAL] = 0.0
            attention.o_proj.weight[SIGNAL, :] = 0.0
            mlp.down_proj.weight[SIGNAL, :] = 0.0
        head[ids["eot"], :] = 0.0  # (tied: also its input embedding, which no prompt or sample feeds back)
    model.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=stops)
    return model


def calibrate_end(model: Any, vocab: int, stop_probability: float, steps: int, rows: int, seed: int) -> dict[str, Any]:
    """Set the end token's weight on SIGNAL so that, sampling at temperature 1, it ends ``stop_probability`` of steps.

    On the model's own continuations, the contexts it will see: ``rows`` random prompts of 32
    ids, each continued ``steps`` tokens by plain sampling (the end token left out), then the
    hidden states of those sequences in the model's own dtype. The end token's logit is the
    weight times the SIGNAL value after the final norm (nearly constant), every other logit
    is untouched, so the mean end probability is found by bisection on the weight. With no
    top-k or top-p cut, that probability is the end logit against the log-sum-exp of all
    the others, which barely moves from one position to the next.
    """
    import torch

    device = next(model.parameters()).device
    ids = special_ids(vocab)
    end = ids["eot"]
    head = model.get_output_embeddings().weight
    prompt = torch.randint(0, ids["bos"], (rows, 32), generator=torch.Generator().manual_seed(seed + 7))
    prompt[:, 0] = ids["bos"]
    draw = torch.Generator(device=device).manual_seed(seed + 8)
    keyword = _cache_keyword(model)
    with torch.inference_mode():
        tokens = [prompt.to(device)]
        out = model(input_ids=tokens[0], use_cache=True, logits_to_keep=1)
        for _ in range(steps):
            probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
            probs[:, end] = 0.0
            tokens.append(torch.multinomial(probs, 1, generator=draw))
            out = model(input_ids=tokens[-1], use_cache=True, **{keyword: _cache_of(out)})
        del out
        sequence = torch.cat(tokens, dim=1)
        hidden = model.model(input_ids=sequence).last_hidden_state[:, 31:-1, :]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        others = torch.cat(
            [
                torch.logsumexp((chunk @ head.T).float().index_fill_(1, torch.tensor([end], device=device), -1e30), 1)
                for chunk in hidden.split(1024)
            ]
        )
        row = head[end].clone()

        def probabilities(weight: float) -> Any:
            row[SIGNAL] = weight
            return torch.sigmoid((hidden @ row).float() - others)

        low, high = -1.0, 1.0
        while float(probabilities(high).mean()) < stop_probability and high < 1e6:
            high *= 2
        while float(probabilities(low).mean()) > stop_probability and low > -1e6:
            low *= 2
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if float(probabilities(mid).mean()) < stop_probability else (low, mid)
        achieved = probabilities((low + high) / 2)
        weight = float(row[SIGNAL])  # as the model's dtype holds it
        signal = float(hidden[:, SIGNAL].float().mean())
    with torch.no_grad():
        head[end, SIGNAL] = weight
    quantiles = torch.quantile(achieved.float(), torch.tensor([0.1, 0.5, 0.9], device=achieved.device)).tolist()
    return {
        "weight": weight,
        "signal": signal,
        "stop_probability": float(achieved.mean()),
        "p10": quantiles[0],
        "p50": quantiles[1],
        "p90": quantiles[2],
        "positions": int(achieved.numel()),
        "distinct_drawn": int(torch.unique(sequence[:, 32:]).numel()),
    }


# -- prompts and the three sides ----------------------------------------------------------------


def prompt_ids(count: int, vocab: int, seed: int, tiny: bool) -> list[list[int]]:
    """``count`` random-id prompts with lengths drawn from v1's Llama-3.2-1B prompts (tiny: scaled down)."""
    import torch

    pool = [n for sizes in v1_reference()["input_sizes"].values() for n in sizes]
    rng = random.Random(seed)
    lengths = rng.sample(pool, count) if count <= len(pool) else [rng.choice(pool) for _ in range(count)]
    if tiny:
        lengths = [max(4, min(40, n // 8)) for n in lengths]
    bos = special_ids(vocab)["bos"]
    generator = torch.Generator().manual_seed(seed + 1)
    return [[bos, *torch.randint(0, bos, (n - 1,), generator=generator).tolist()] for n in lengths]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peak(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def run_v1(
    model: Any, tokenizer: Any, requests: list[Any], cap: int, sampling: dict[str, Any], stops: list[int], device: str
) -> Side:
    """CASTILLO v1: per prompt, one ``generate`` over its N copies, which runs until its longest sample ends."""
    import torch

    stop_tensor = torch.tensor(stops, device=device)
    side = Side("v1", len(requests), 0.0)
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for request in requests:
            torch.manual_seed(request.seed)
            ids = torch.tensor([list(request.rendered.payload)], device=device)
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                num_return_sequences=request.n,
                max_new_tokens=cap,
                temperature=sampling["temperature"],
                top_k=sampling["top_k"],
                top_p=sampling["top_p"],
                eos_token_id=stops,
                pad_token_id=stops[0],
            )
            new = out[:, ids.shape[1] :]
            tokenizer.batch_decode(new, skip_special_tokens=True)  # v1 kept the texts
            ended = torch.isin(new, stop_tensor)
            first = torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, new.shape[1])
            side.lengths.extend(first.tolist())
            side.capped += int((~ended.any(dim=1)).sum())
            side.slots += new.numel()
    _sync(device)
    side.seconds = time.perf_counter() - start
    side.peak_gib = _peak(device)
    return side


def run_castillo(backend: Any, requests: list[Any], settings: Any, config: Any, device: str, name: str) -> Side:
    """castillo's transformers backend, as the engine calls it."""
    side = Side(name, len(requests), 0.0)
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    for result in backend.generate(requests, settings, config):
        for completion in result.completions:
            side.lengths.append(completion.output_tokens)
            side.capped += completion.finish_reason == "length"
    _sync(device)
    side.seconds = time.perf_counter() - start
    side.peak_gib = _peak(device)
    stats = getattr(backend, "last_stats", None)
    if stats is not None:
        figures = stats.as_dict()
        steps = max(figures["decode_steps"], 1)
        side.slots = figures["row_slots"]
        side.extra = {
            "decode_steps": figures["decode_steps"],
            "mean_live_rows": figures["row_slots"] / steps,
            "prefills": figures["prefills"],
            "prefill_tokens": figures["prefill_tokens"],
            "masked_cache_columns": figures["attention_padding_share"],
            "oom_events": len(figures["oom_events"]),
        }
    return side


def _cache_keyword(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` in 5.x: use what this one takes."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    return getattr(out, "cache", None) or out.past_key_values


def run_ceiling(
    model: Any, prompts: list[list[int]], rows: int, decode_tokens: int, segment: int, vocab: int, device: str
) -> Side:
    """Each prompt prefilled once, then ``decode_tokens`` tokens as full batches of ``rows`` bare argmax steps.

    The decode runs in segments of ``segment`` steps, each from a fresh batch whose context is
    the median prompt (that batch's own prefill is setup, not timed: the prompts' prefills
    are timed above), so the cache stays about as wide as castillo's rows see.
    """
    import torch

    keyword = _cache_keyword(model)
    context = sorted(len(p) for p in prompts)[len(prompts) // 2]
    steps_needed = math.ceil(decode_tokens / rows)
    generator = torch.Generator().manual_seed(11)
    side = Side(f"ceiling: bare decode, {rows} rows", len(prompts), 0.0)
    _reset_peak(device)
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        for ids in prompts:
            out = model(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1)
            out.logits[:, -1].argmax(dim=-1)
        _sync(device)
        prefill = time.perf_counter() - start
        decode, done = 0.0, 0
        while done < steps_needed:
            steps = min(segment, steps_needed - done)
            batch = torch.randint(0, vocab - 256, (rows, context), generator=generator).to(device)
            out = model(input_ids=batch, use_cache=True, logits_to_keep=1)
            cache = _cache_of(out)
            token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            del out
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=token, use_cache=True, **{keyword: cache})
                cache = _cache_of(out)
                token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            _sync(device)
            decode += time.perf_counter() - start
            done += steps
            del cache, out
    side.seconds = prefill + decode
    side.peak_gib = _peak(device)
    side.extra = {
        "prefill_s": prefill,
        "decode_s": decode,
        "decode_steps": steps_needed,
        "segment_steps": segment,
        "context": context,
        "cache": "transformers default (DynamicCache), argmax",
    }
    return side


# -- the run ----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import castillo_core

    found = {"python": platform.python_version(), "castillo_core_from": str(Path(castillo_core.__file__).parent)}
    for name in ("castillo", "castillo-transformers", "torch", "transformers", "pydantic", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def unsatisfied() -> list[str]:
    """Requirements of castillo, its transformers backend and the carried packages that this Python does not meet.

    run.sh installs the wheels with ``--no-deps`` (the GPU machine's own packages must do), so
    this is where a version the machine lacks shows up, before anything runs.
    """
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    problems = []
    for dist in ("castillo", "castillo-transformers", "pydantic", "transformers"):
        try:
            texts = requires(dist) or []
        except PackageNotFoundError:
            problems.append(f"{dist}: not installed")
            continue
        for text in texts:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                found = version(requirement.name)
            except PackageNotFoundError:
                problems.append(f"{requirement} (for {dist}): not installed")
                continue
            if requirement.specifier and not requirement.specifier.contains(found, prereleases=True):
                problems.append(f"{requirement} (for {dist}): {found} installed")
    return problems


def _hardware(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, cuda {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {cpu})"


def _row(side: Side) -> str:
    s = side.summary()
    peak = f"{s['peak_gib']:.1f}" if s["peak_gib"] is not None else "-"
    return (
        f"{side.name:34s} {side.prompts:7d} {s['completions']:6d} {s['tokens']:8d} {s['seconds']:8.2f} "
        f"{s['tokens_per_s']:9.1f} {s['completions_per_s']:8.2f} {s['mean_length']:8.1f} "
        f"{s['capped_share']:7.1%} {peak:>8s}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    began = time.perf_counter()
    args = parse_args(argv)
    import torch

    from castillo_core import GenerationConfig, ModelSpec, Prompt, Rendered, build_requests, get_plugins

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu kit: CUDA is not available here; use --cpu for the CPU mode")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    shape = SHAPES[args.shape]
    vocab = shape["vocab_size"]
    reference = v1_reference()
    # Plain sampling (castillo's default): with v1's top_k 50 / top_p 0.9 for this model, an end
    # token of small probability is cut wherever it is not among the top few, so no bias gives a
    # steady stop rate on a random model (its draws come back to a few hundred tokens).
    sampling = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    versions = _versions()
    print(
        f"gpu kit: {shape['label']} shape ({shape['num_hidden_layers']} layers, hidden {shape['hidden_size']}, "
        f"vocab {vocab}{', tied' if shape['tie_word_embeddings'] else ''}), random weights (seed {args.seed}), "
        f"{args.dtype} on {args.device}: {_hardware(args.device)}"
    )
    print(
        f"versions: python {versions['python']}, torch {versions['torch']}, transformers {versions['transformers']}, "
        f"castillo {versions['castillo']} + castillo-transformers {versions['castillo-transformers']} "
        f"(castillo_core from {versions['castillo_core_from']}), pydantic {versions['pydantic']}"
    )
    problems = unsatisfied()
    print(f"requirements: {'; '.join(problems) if problems else 'all met'}")
    from transformers import LlamaForCausalLM

    if _cache_keyword(LlamaForCausalLM) != "cache":
        print(
            f"warning: transformers {versions['transformers']} takes past_key_values=, not cache=, which "
            "castillo-transformers' decode loop passes: its decode steps will fail (carry a newer transformers)"
        )

    # 1. the model
    mark = time.perf_counter()
    target_ratio = reference["max_over_mean"]
    p_stop = stop_probability(args.max_new_tokens, args.n, target_ratio)
    model = build_model(args.shape, args.device, dtype, args.seed)
    chains = 64 if args.device.startswith("cuda") else 8
    calibration = calibrate_end(model, vocab, p_stop, min(args.max_new_tokens, 128), chains, args.seed)
    built = time.perf_counter() - mark
    own_dir = args.model_dir is None
    model_dir = args.model_dir or Path(tempfile.mkdtemp(prefix="castillo-gpu-kit-"))
    model_dir = model_dir / f"random-{args.shape}"
    mark = time.perf_counter()
    model.save_pretrained(model_dir)
    write_tokenizer(model_dir, vocab)
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    saved = time.perf_counter() - mark
    mean_len, mean_max = expected_lengths(p_stop, args.max_new_tokens, args.n)
    print(
        f"end token <|eot_id|> ({special_ids(vocab)['eot']}) biased: weight {calibration['weight']:.1f} on a "
        f"residual dimension worth {calibration['signal']:.3f} after the final norm, so it ends "
        f"{calibration['stop_probability']:.2%} of steps (10%-90% of {calibration['positions']} positions of "
        f"its own continuations: {calibration['p10']:.2%}-{calibration['p90']:.2%}; {calibration['distinct_drawn']} "
        f"distinct tokens drawn), aimed at {p_stop:.2%}: capped geometric lengths of mean {mean_len:.0f}, "
        f"longest of {args.n} {mean_max:.0f} on average, ratio {target_ratio} as in v1's {reference['prompts']} "
        f"Llama-3.2-1B prompts; built in {built:.1f} s, saved in {saved:.1f} s"
    )

    # 2. castillo opens it, like any model directory
    mark = time.perf_counter()
    rows = args.rows
    ids = prompt_ids(args.prompts + 1, vocab, args.seed, args.shape == "tiny")
    warm_ids, ids = ids[0], ids[1:]
    longest = max(len(p) for p in ids) + args.max_new_tokens
    spec = ModelSpec(
        backend="transformers",
        model=str(model_dir),
        dtype=args.dtype,
        options={"device": args.device, "max_batch_rows": rows, "max_batch_tokens": rows * longest},
    )
    backend = get_plugins().backend("transformers")(spec)
    info = backend.open()
    opened = time.perf_counter() - mark
    model, tokenizer = backend.model, backend.tokenizer
    stops = list(backend.stop_ids)
    config = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed, **sampling)
    settings = backend.sampling(config)
    prompts = [
        Prompt(dataset="v1-lengths", prompt_text=f"random ids #{i} ({len(p)} tokens)") for i, p in enumerate(ids)
    ]
    rendered = [Rendered(input_size=len(p), payload=tuple(p)) for p in ids]
    requests = build_requests(prompts, rendered, config, backend="transformers")
    lengths = sorted(len(p) for p in ids)
    print(
        f"castillo opened it in {opened:.1f} s ({info.dtype}, {info.hardware}); prompts: P={len(ids)} random-id "
        f"prompts with v1's Llama-3.2-1B prompt lengths{' / 8' if args.shape == 'tiny' else ''} (median "
        f"{lengths[len(lengths) // 2]}, max {lengths[-1]}), N={args.n}, max_new_tokens {args.max_new_tokens}, "
        f"temperature {settings.temperature} top_k {settings.top_k} top_p {settings.top_p}, "
        f"seed {args.seed}; castillo max_batch_rows {rows}"
    )

    # 3. warm-ups (kernels, allocator), and v1's step time, which sizes K
    warm_prompt = Prompt(dataset="v1-lengths", prompt_text="warm-up")
    warm_cap = min(args.max_new_tokens, 32)
    warm_config = GenerationConfig(n=args.n, max_new_tokens=warm_cap, seed=args.seed + 1, **sampling)
    warm = build_requests(
        [warm_prompt],
        [Rendered(input_size=len(warm_ids), payload=tuple(warm_ids))],
        warm_config,
        backend="transformers",
    )
    run_castillo(backend, warm, settings, warm_config, args.device, "warm-up")
    run_ceiling(model, [warm_ids], rows, rows * 4, 4, vocab, args.device)
    v1_warm = run_v1(model, tokenizer, warm, warm_cap, sampling, stops, args.device)
    v1_warm = run_v1(model, tokenizer, warm, warm_cap, sampling, stops, args.device)
    v1_step = v1_warm.seconds / max(v1_warm.slots // args.n, 1)
    left = args.budget_s - (time.perf_counter() - began)
    per_prompt = v1_step * mean_max
    k = max(1, min(args.v1_prompts, int(0.4 * left / per_prompt)))
    print(
        f"sizing: v1 took {v1_step * 1000:.1f} ms per step of {args.n} rows in the warm-up; expecting "
        f"{per_prompt:.1f} s per prompt, v1 runs K={k} of the P={len(ids)} prompts "
        f"(at most --v1-prompts {args.v1_prompts}, 40% of the {left:.0f} s left of --budget-s {args.budget_s:.0f})"
    )

    # 4. the sides
    sides: list[Side] = []
    v1 = run_v1(model, tokenizer, requests[:k], args.max_new_tokens, sampling, stops, args.device)
    v1.name = "v1: generate, N copies per prompt"
    sides.append(v1)
    print(f"  v1 done in {v1.seconds:.1f} s", flush=True)
    same = run_castillo(backend, requests[:k], settings, config, args.device, f"castillo, the same {k} prompts")
    sides.append(same)
    print(f"  castillo (same {k} prompts) done in {same.seconds:.1f} s", flush=True)
    # castillo on all P and the ceiling take about the same time; fit both in what is left.
    step = same.seconds / max(same.extra.get("decode_steps", 1), 1)
    left = args.budget_s - (time.perf_counter() - began)
    count = len(requests)
    while count > k and 2 * step * (count * args.n * mean_len / rows + args.max_new_tokens) > 0.9 * left:
        count = max(k, count // 2)
    if count < len(requests):
        print(f"sizing: castillo and the ceiling run {count} of the {len(requests)} prompts to fit in {left:.0f} s")
        requests, ids = requests[:count], ids[:count]
    full = run_castillo(backend, requests, settings, config, args.device, f"castillo, all {len(ids)} prompts")
    sides.append(full)
    print(f"  castillo (all {len(ids)} prompts) done in {full.seconds:.1f} s", flush=True)
    segment = max(8, min(args.max_new_tokens, round(2 * full.tokens / max(full.completions, 1))))
    ceiling = run_ceiling(model, ids, rows, full.tokens - full.completions, segment, vocab, args.device)
    ceiling.lengths = list(full.lengths)  # the same work: castillo's tokens at a full batch
    ceiling.capped = full.capped
    sides.append(ceiling)
    print(f"  ceiling done in {ceiling.seconds:.1f} s", flush=True)

    # 5. the table
    print()
    print(
        f"{'side':34s} {'prompts':>7s} {'compl.':>6s} {'tokens':>8s} {'seconds':>8s} {'tok/s':>9s} "
        f"{'compl/s':>8s} {'mean len':>8s} {'capped':>7s} {'peak GiB':>8s}"
    )
    for side in sides:
        print(_row(side))
    rate = {side.name: side.completions / side.seconds for side in sides}
    vs_v1 = rate[full.name] / rate[v1.name]
    same_vs_v1 = rate[same.name] / rate[v1.name]
    vs_ceiling = ceiling.seconds / full.seconds
    v1_waste = v1.slots / max(v1.tokens, 1)
    lengths_v1, lengths_full = v1.summary(), full.summary()
    print()
    print(
        f"v1: {v1_waste:.2f} decode slots per kept token (rows still decoding after they stopped; "
        f"v1's own logs: {target_ratio}), {v1.seconds / max(v1.slots // args.n, 1) * 1000:.1f} ms per step of "
        f"{args.n} rows"
    )
    if full.extra:
        print(
            f"castillo: {full.extra['decode_steps']} decode steps, {full.extra['mean_live_rows']:.1f} of {rows} "
            f"rows live on average, {full.extra['prefills']} prefills, masked cache columns "
            f"{full.extra['masked_cache_columns']:.1%}, out-of-memory retries {full.extra['oom_events']}; "
            f"{full.seconds / max(full.extra['decode_steps'], 1) * 1000:.1f} ms per step all included"
        )
    print(
        f"ceiling: {ceiling.extra['decode_steps']} full steps of {rows} rows "
        f"({ceiling.extra['decode_s'] / max(ceiling.extra['decode_steps'], 1) * 1000:.1f} ms each, context "
        f"{ceiling.extra['context']}+{segment}) + {len(ids)} prefills ({ceiling.extra['prefill_s']:.2f} s)"
    )
    print(
        f"lengths: v1 mean {lengths_v1['mean_length']:.1f} (std {lengths_v1['std_length']:.1f}, capped "
        f"{lengths_v1['capped_share']:.1%}), castillo mean {lengths_full['mean_length']:.1f} (std "
        f"{lengths_full['std_length']:.1f}, capped {lengths_full['capped_share']:.1%}); expected {mean_len:.1f}"
    )
    print(
        f"completions/s: castillo / v1 {vs_v1:.2f} x (castillo on the same {k} prompts: {same_vs_v1:.2f} x); "
        f"castillo / ceiling {vs_ceiling:.0%}; v1 / ceiling {ceiling.seconds / ceiling.completions * rate[v1.name]:.0%}"
    )
    total = time.perf_counter() - began
    print(f"whole script {total:.0f} s ({args.dtype}, {args.device})")
    figures = {
        "args": {k2: str(v) if isinstance(v, Path) else v for k2, v in vars(args).items()},
        "versions": versions,
        "hardware": _hardware(args.device),
        "dtype": args.dtype,
        "shape": shape["label"],
        "stops": {
            **calibration,
            "aimed": p_stop,
            "expected_mean": mean_len,
            "expected_longest": mean_max,
        },
        "v1_prompts": k,
        "prompts": len(ids),
        "sides": [side.summary() for side in sides],
        "castillo_over_v1": vs_v1,
        "castillo_same_prompts_over_v1": same_vs_v1,
        "castillo_over_ceiling": vs_ceiling,
        "v1_slots_per_token": v1_waste,
        "seconds": total,
        "setup_seconds": {"build": built, "save": saved, "open": opened},
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    backend.close()
    if own_dir and not args.keep_model:
        shutil.rmtree(model_dir.parent, ignore_errors=True)
    print(
        f"RESULT gpu_transformers {vs_v1:.2f} x (goal >= 5x v1, >= 80% of ceiling; castillo at {vs_ceiling:.0%} "
        f"of the ceiling; {args.dtype}, {shape['label']} shape, {args.device})"
    )
    return figures


if __name__ == "__main__":
    main()
