"""Engine overhead: the fake backend returning instantly, many prompts x N samples
through metrics, aggregation and the store.

Prints responses/s of the whole engine beside the bare fake backend loop (what the
engine costs on top of a backend that costs nothing), peak RSS of the engine process,
and the time to resume over a finished store of ``--resume-responses`` responses.

The rounds alternate the order of the bare loop and the engine (A B, then B A); the
headline is the median engine rate over the rounds, best-of beside it.

    python bench/engine_overhead.py            # 10,000 x 10, resume over 1,000,000
    python bench/engine_overhead.py --quick    # 2,000 x 10, resume over 100,000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import load_line, machine_line  # bench/ is on the path: the script's folder

REPO = Path(__file__).resolve().parent.parent


def _spec(out: str, prompts: int, n: int, metrics: list[str] | None):  # type: ignore[no-untyped-def]
    from castillo_core.engine.plan import load_spec

    data = {
        "out": out,
        "models": [{"backend": "fake", "model": "bench/model", "options": {"mean_tokens": 200}}],
        "corpora": [{"name": "tiny", "options": {"size": prompts}}],
        "generation": {"n": n, "max_new_tokens": 1024, "seed": 1},
    }
    if metrics is not None:
        data["metrics"] = metrics
    return load_spec(data, "bench")


def child(mode: str, out: str, prompts: int, n: int, metrics: str) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    from castillo_core.plugins import get_plugins

    metric_list = None if metrics == "all" else [m for m in metrics.split(",") if m]
    plugins = get_plugins()
    spec = _spec(out, prompts, n, metric_list)
    if mode == "backend":
        from castillo_core.api.ids import prompt_seed
        from castillo_core.api.records import GenerationRequest
        from castillo_core.engine.engine import Engine, load_prompts

        engine = Engine(spec, plugins)
        cell = engine.cells[0]
        backend = cell.backend_cls(cell.spec)
        backend.open()
        settings = backend.sampling(cell.generation)
        selected = load_prompts(cell).prompts
        start = time.perf_counter()
        rendered = backend.render(selected, cell.generation.max_prompt_tokens)
        requests = [
            GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(1, p.prompt_id, n), n=n)
            for i, (p, r) in enumerate(zip(selected, rendered, strict=True))
        ]
        responses = sum(len(res.completions) for res in backend.generate(requests, settings, cell.generation))
        seconds = time.perf_counter() - start
        metrics_used: list[str] = []
        startup = 0.0
    else:
        from castillo_core.engine.engine import Engine

        # Warm up: the first run in a process pays one-time imports (pyarrow pulls in
        # pandas on its first conversion, ~0.25 s). Reported apart as startup, so the
        # figure is the engine's steady-state throughput.
        start = time.perf_counter()
        Engine(_spec(out + "-warmup", 20, n, metric_list), plugins).run()
        startup = time.perf_counter() - start
        engine = Engine(spec, plugins)
        metrics_used = [m.name for m in engine.metric_classes]
        start = time.perf_counter()
        summary = engine.run()
        seconds = time.perf_counter() - start
        responses = sum(c.responses for c in summary.cells)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": seconds, "responses": responses, "rss_mb": rss_mb, "metrics": metrics_used, "startup": startup}
        )
    )


def _measure(mode: str, out: str, prompts: int, n: int, metrics: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, out, str(prompts), str(n), metrics],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--resume-responses", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--metrics",
        default="length,degeneration",
        help="comma list (default: castillo's own length,degeneration), 'all' or '' for none",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, out, prompts, n, metrics = args.child
        child(mode, out, int(prompts), int(n), metrics)
        return
    if args.quick:
        args.prompts, args.resume_responses, args.repeats = 2_000, 100_000, 1

    tmp = Path(tempfile.mkdtemp(prefix="castillo-bench-"))
    try:
        rows = []
        print(machine_line(), flush=True)
        for i in range(args.repeats):  # alternate A B, then B A: the machine is shared and its load drifts
            if i % 2 == 0:
                bare = _measure("backend", str(tmp / f"bare{i}"), args.prompts, args.n, args.metrics)
                full = _measure("engine", str(tmp / f"run{i}"), args.prompts, args.n, args.metrics)
            else:
                full = _measure("engine", str(tmp / f"run{i}"), args.prompts, args.n, args.metrics)
                bare = _measure("backend", str(tmp / f"bare{i}"), args.prompts, args.n, args.metrics)
            rows.append((bare, full))
            shutil.rmtree(tmp / f"run{i}", ignore_errors=True)
        print(
            f"engine overhead: {args.prompts:,} prompts x {args.n} samples, metrics: "
            f"{', '.join(rows[0][1]['metrics']) or 'none'}"
        )
        header = ("repeat", "bare backend resp/s", "engine resp/s", "engine/bare", "startup s", "peak RSS MB")
        print(f"{header[0]:>6} {header[1]:>20} {header[2]:>14} {header[3]:>12} {header[4]:>10} {header[5]:>12}")
        rates = []
        for i, (bare, full) in enumerate(rows):
            b = bare["responses"] / bare["seconds"]
            f = full["responses"] / full["seconds"]
            rates.append(f)
            print(f"{i:>6} {b:>20,.0f} {f:>14,.0f} {f / b:>12.3f} {full['startup']:>10.2f} {full['rss_mb']:>12.0f}")
        best = max(rates)
        median = statistics.median(rates)
        peak = max(full["rss_mb"] for _, full in rows)

        resume_prompts = args.resume_responses // args.n
        store = str(tmp / "resume")
        build = _measure("engine", store, resume_prompts, args.n, "")
        again = _measure("engine", store, resume_prompts, args.n, "")
        print(
            f"resume over a finished store of {build['responses']:,} responses "
            f"(built at {build['responses'] / build['seconds']:,.0f} resp/s, no metrics): "
            f"{again['seconds']:.2f} s, {again['responses']} new responses"
        )
        cli = [
            sys.executable,
            "-m",
            "castillo_core.cli",
            "run",
            "--backend",
            "fake",
            "--model",
            "bench/model",
            "-B",
            "mean_tokens=200",
            "--corpus",
            "tiny",
            "-C",
            f"size={resume_prompts}",
            "-n",
            str(args.n),
            "--max-new-tokens",
            "1024",
            "--seed",
            "1",
            "--no-metrics",
            "--quiet",
            "--out",
            store,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cli, capture_output=True, text=True, cwd=REPO)
        cli_seconds = time.perf_counter() - start
        outcome = "skipped" if "skipped" in proc.stdout else (proc.stdout + proc.stderr).strip()[-300:]
        print(f"the same resume as a whole `castillo run` process (startup included): {cli_seconds:.2f} s ({outcome})")
        print(f"peak RSS of the engine process: {peak:.0f} MB; engine resp/s median {median:,.0f}, best {best:,.0f}")
        print(load_line())
        print(
            f"RESULT engine_overhead {median:,.0f} responses/s, median of {len(rates)} alternating rounds (best-of "
            f"{best:,.0f}; goal >= 50,000 responses/s: {'met' if median >= 50_000 else 'not met'}; RSS {peak:.0f} MB "
            f"< 500 MB; resume {again['seconds']:.2f} s < 2 s: {'met' if again['seconds'] < 2 else 'not met'})"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
