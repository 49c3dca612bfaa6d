"""Ray scaling: the same grid through the local executor and through Ray with 2 workers, same cores.

The grid is 2 models x 2 corpora on the real llama.cpp backend: two tiny random-weight
GGUFs written by tests/fixtures/tiny_gguf.py (different weight seeds) x the built-in
``tiny`` corpus and ``humaneval`` (``tiny`` alone where castillo-corpora is not
installed), N samples per prompt. Measured side by side in one process, in alternating
rounds (the order of the sides reverses every round), fresh outputs each time:

- A, local: ``Engine.run`` with the local executor and castillo's default llama.cpp
  threads (every core this process may use), one model after the other;
- B, ray: the same grid through ``RayExecutor`` on a local Ray instance with as many CPUs
  as A uses, started once (its start-up is reported apart): one task per model, each
  task 1 llama.cpp thread, so 2 workers x 1 thread on the 2 cores A had;
- R, local 1 thread (a reference, ``--no-reference`` drops it): A pinned to one thread,
  what the earlier version of this benchmark compared against (1 core against 2).

The headline is the median over the rounds of each round's A/B; best-of (best A over
best B) is printed beside it, never instead. A's CPU time next to its wall time shows how
much of the cores one process gets on the shared machine; B's tasks' times inside their
workers show what two get. Ray's fixed overhead is measured on the ``fake`` backend (no
model, next to no work) cut into 4 and then into many tasks: the slope (extra wall time
per extra task, 2 workers sharing them) is the cost per task; what is left of the 4-task
run over the local run is the cost per run (the hub actor, worker processes starting, the
final scan); ``ray.init`` is timed once. Two cross-checks come from the workers' own
clocks: the gap between one task's end and the next one's start on the same worker (Ray's
dispatch), and the time a model-less task spends inside its worker (plugins, store,
parts). From these the script projects when Ray pays off: the overhead share of a task of
T seconds, and the speed-up of W workers that each bring their own cores or GPU (other
nodes) over the local executor on one. The datasets of the sides are compared row for row.

    python bench/ray_scaling.py            # 40 prompts per cell, N=10, cap 128, 5 rounds
    python bench/ray_scaling.py --quick    # 4 prompts, N=4, cap 24, 2 rounds (a smoke test)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _machine import load_line, machine_line  # noqa: E402  (bench/ is on the path: the script's folder)


def _corpora(limit: int) -> list[dict[str, Any]]:
    from castillo_core.plugins import get_plugins

    available = {e.name for e in get_plugins().entries("corpus") if e.available}
    if "humaneval" in available:
        return [{"name": "tiny", "limit": limit}, {"name": "humaneval", "limit": limit}]
    print("humaneval (castillo-corpora) is not installed: the grid is 2 models x tiny only")
    return [{"name": "tiny", "limit": limit, "options": {"size": limit}}]


def _spec(out: Path, models: list[dict[str, Any]], corpora: list[dict[str, Any]], n: int, cap: int) -> Any:
    from castillo_core.engine.plan import load_spec

    data = {
        "out": str(out),
        "models": models,
        "corpora": corpora,
        "generation": {"n": n, "max_new_tokens": cap, "seed": 5},
    }
    return load_spec(data, "bench")


def _run(spec: Any, executor: Any = None) -> float:
    from castillo_core.engine.engine import Engine
    from castillo_core.plugins import get_plugins

    engine = Engine(spec, get_plugins(), executor=executor)
    started, cpu = time.perf_counter(), time.process_time()
    summary = engine.run()
    wall = time.perf_counter() - started
    _run.cpu = time.process_time() - cpu  # type: ignore[attr-defined]
    if not summary.ok or summary.failures:
        raise SystemExit(f"run into {spec.out} failed: {summary.failures or [c.status for c in summary.cells]}")
    return wall


def _same(a: Path, b: Path) -> bool:
    from castillo_core.engine.dataset import read_table

    def rows(out: Path, table: str) -> list[dict[str, Any]]:
        found = read_table(out, table).drop_columns(["gen_time"] if table == "prompts" else ["latency"]).to_pylist()
        return sorted(found, key=lambda r: (r["model"], r["dataset"], r["prompt_id"], r.get("sample_index", -1)))

    return all(rows(a, t) == rows(b, t) for t in ("prompts", "responses"))


def _overhead(root: Path, limit: int, n: int, cap: int, overhead_tasks: int) -> dict[str, float]:
    """Ray's fixed cost on the fake backend (no model): per extra task (slope) and per run."""
    from castillo_ray.executor import RayExecutor

    fake = [{"backend": "fake", "model": "m1"}, {"backend": "fake", "model": "m2"}]
    fake_corpora = [{"name": "tiny", "options": {"size": 2 * limit}}]
    local_fake = []
    walls: dict[str, list[float]] = {"few": [], "many": []}
    counts: dict[str, int] = {}
    stats = []
    for kind in ("few", "many", "many", "few"):
        local_fake.append(_run(_spec(root / f"fake-local-{len(stats)}", fake, fake_corpora, n, cap)))
        # per model 2 * limit prompts: 2 shards each (4 tasks), or about overhead_tasks in all
        shard = limit if kind == "few" else max(1, 4 * limit // overhead_tasks)
        executor = RayExecutor(shard_size=shard)
        out = root / f"fake-ray-{kind}-{len(stats)}"
        walls[kind].append(_run(_spec(out, fake, fake_corpora, n, cap), executor))
        counts[kind] = len(executor.tasks)
        stats.append(executor.stats)
    few, many = counts["few"], counts["many"]
    wall_few, wall_many = statistics.median(walls["few"]), statistics.median(walls["many"])
    local = statistics.median(local_fake)
    per_task = (wall_many - wall_few) / ((many - few) / 2)  # 2 workers share the extra tasks
    per_run = wall_few - local - per_task * few / 2
    gaps = []  # on one worker, from one task's end to the next one's start
    for run in stats:
        by_pid: dict[int, list[Any]] = {}
        for stat in run:
            by_pid.setdefault(stat.pid, []).append(stat)
        for seq in by_pid.values():
            seq.sort(key=lambda s: s.started_at)
            gaps += [b.started_at - (a.started_at + a.worker) for a, b in itertools.pairwise(seq)]
    inside = statistics.median(s.worker for run in stats for s in run)
    print(f"\nRay's fixed cost: fake backend (no model), 2 models x {2 * limit} prompts, N={n}")
    print(f"  local executor: {local:.2f} s (median of {len(local_fake)})")
    print(
        f"  ray, {few} tasks: {wall_few:.2f} s; {many} tasks: {wall_many:.2f} s (medians of 2, order few many many few)"
    )
    print(f"  per extra task (slope, 2 workers): {per_task:.3f} s")
    noise = " (zero within the noise)" if per_run < 0.05 else ""
    print(f"  per run (hub actor, worker start-up, final scan): {per_run:.2f} s{noise}")
    print(f"  between tasks on one worker (Ray dispatch): median {statistics.median(gaps):.3f} s")
    print(f"  inside a task without a model (plugins, store, parts): median {inside:.3f} s")
    return {"per_task": per_task, "per_run": max(per_run, 0.0)}


def _projection(init: float, per_task: float, per_run: float) -> None:
    """When Ray pays off: workers that bring their own cores or GPU, from the measured fixed costs.

    A grid of M tasks of T seconds each (a model's cell, or a shard of it) on the local executor
    takes M * T on one node; on W such workers (other nodes, or one GPU each) Ray takes
    per_run + ceil(M / W) * (T + per_task), plus ray.init when the command starts Ray itself.
    With one task per worker (M = W) Ray breaks even at T = (per_run + per_task [+ init]) / (W - 1).
    """
    print("\nprojection from the measured fixed costs (not measured: assumes W workers, each on its own cores or GPU,")
    print("each as fast as the local process on one, and M tasks of T s of work; local runs them one after the other):")
    print(f"  Ray's per-task overhead share = per_task / T = {per_task:.3f} s / T")
    widths = (2, 4, 8, 16)
    header = "".join(f"{'W=' + str(w):>7}" for w in widths)
    print(f"  {'T per task':>10}  {'share':>6}{header}  <- speed-up of W workers over local, M=16 tasks, with ray.init")
    for seconds in (0.5, 2.0, 10.0, 60.0, 600.0):
        speedups = ""
        for workers in widths:
            ray_wall = init + per_run + math.ceil(16 / workers) * (seconds + per_task)
            speedups += f"{16 * seconds / ray_wall:>7.2f}"
        print(f"  {seconds:>8.1f} s  {per_task / seconds:>6.1%}{speedups}")
    for workers in (2, 4, 8):
        warm = (per_run + per_task) / (workers - 1)
        cold = (init + per_run + per_task) / (workers - 1)
        print(
            f"  break-even with {workers} workers, one task each: T > {warm:.2f} s joining a running cluster, "
            f"T > {cold:.1f} s when the command starts Ray"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="prompts per cell")
    parser.add_argument("-n", type=int, default=10, help="samples per prompt")
    parser.add_argument("--cap", type=int, default=128, help="max new tokens")
    parser.add_argument("--rounds", "--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--no-reference", action="store_true", help="skip the local run pinned to 1 thread")
    parser.add_argument("--overhead-tasks", type=int, default=24, help="small fake-backend tasks for the overhead")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 4 prompts, N=4, cap 24, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.n, args.cap, args.rounds, args.overhead_tasks = 4, 4, 24, 2, 8
    logging.basicConfig(level=logging.WARNING)
    os.environ.pop("RAY_ADDRESS", None)
    print(machine_line(), flush=True)

    import ray
    from castillo_llamacpp._llama import default_threads
    from castillo_ray.executor import RayExecutor

    from tests.fixtures.tiny_gguf import cached_tiny_gguf

    cache = REPO / ".pytest_cache" / "d" / "castillo-llamacpp-tiny"
    cache.mkdir(parents=True, exist_ok=True)
    ggufs = [cached_tiny_gguf(cache), cached_tiny_gguf(cache, seed=1)]
    threads = default_threads()
    models = {
        "local": [{"backend": "llamacpp", "model": str(g)} for g in ggufs],
        "ray": [{"backend": "llamacpp", "model": str(g), "options": {"n_threads": 1}} for g in ggufs],
    }
    models["local1"] = models["ray"]
    sides = ["local", "ray"] + ([] if args.no_reference else ["local1"])
    corpora = _corpora(args.limit)
    print(
        f"grid: 2 tiny GGUFs x {', '.join(c['name'] for c in corpora)}; {args.limit} prompts per cell, "
        f"N={args.n}, cap {args.cap}\n"
        f"A local: castillo's default llama.cpp threads ({threads}, the cores this process may use); "
        f"B ray: {threads} CPUs, one task per model, 1 thread each"
        + ("" if args.no_reference else "; R local 1 thread (reference)")
    )

    started = time.perf_counter()
    ray.init(address="local", num_cpus=threads, include_dashboard=False, logging_level="WARNING")
    init = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory(prefix="castillo-ray-bench-") as tmp:
            root = Path(tmp)
            walls: dict[str, list[float]] = {side: [] for side in sides}
            cpus: dict[str, list[float]] = {side: [] for side in sides}
            same: dict[str, bool] = {side: True for side in sides if side != "ray"}
            print(f"\nray.init ({threads} CPUs, local): {init:.1f} s, once\n")
            head = f"{'round':>5}  {'order':<14}  {'A: local s':>10}  {'A: CPU s':>8}  {'B: ray s':>8}  {'A/B':>5}"
            if not args.no_reference:
                head += f"  {'R: 1 thr s':>10}  {'R/B':>5}"
            print(f"{head}  B: tasks in workers s")
            for round_ in range(args.rounds):
                order = sides if round_ % 2 == 0 else sides[::-1]
                inside = ""
                for side in order:
                    out = root / f"{side}-{round_}"
                    executor = RayExecutor() if side == "ray" else None
                    walls[side].append(_run(_spec(out, models[side], corpora, args.n, args.cap), executor))
                    cpus[side].append(_run.cpu)  # type: ignore[attr-defined]
                    if executor is not None:
                        inside = " + ".join(f"{s.worker:.2f}" for s in executor.stats)
                for side in same:
                    same[side] = same[side] and _same(root / f"{side}-{round_}", root / f"ray-{round_}")
                line = (
                    f"{round_:>5}  {'>'.join(order):<14}  {walls['local'][-1]:>10.2f}  {cpus['local'][-1]:>8.2f}  "
                    f"{walls['ray'][-1]:>8.2f}  {walls['local'][-1] / walls['ray'][-1]:>5.2f}"
                )
                if not args.no_reference:
                    line += f"  {walls['local1'][-1]:>10.2f}  {walls['local1'][-1] / walls['ray'][-1]:>5.2f}"
                print(f"{line}  {inside}", flush=True)
            ratios = [a / b for a, b in zip(walls["local"], walls["ray"], strict=True)]
            ratio = statistics.median(ratios)
            best = min(walls["local"]) / min(walls["ray"])
            med = {side: statistics.median(w) for side, w in walls.items()}
            line = (
                f"{'median':>5}  {'':<14}  {med['local']:>10.2f}  {statistics.median(cpus['local']):>8.2f}  "
                f"{med['ray']:>8.2f}  {ratio:>5.2f}"
            )
            ref = ""
            if not args.no_reference:
                ref_ratio = statistics.median(a / b for a, b in zip(walls["local1"], walls["ray"], strict=True))
                line += f"  {med['local1']:>10.2f}  {ref_ratio:>5.2f}"
                ref = f"; against local pinned to 1 thread {ref_ratio:.2f}x"
            print(f"{line}   (A/B and R/B: median of the rounds' ratios)")
            best_local = [min(pair) for pair in zip(*(walls[s] for s in sides if s != "ray"), strict=True)]
            best_local_ratio = statistics.median(a / b for a, b in zip(best_local, walls["ray"], strict=True))
            print(
                f"{'best':>5}  {'':<14}  {min(walls['local']):>10.2f}  {'':>8}  {min(walls['ray']):>8.2f}  {best:>5.2f}"
            )
            print(f"the faster local configuration of each round / B: median {best_local_ratio:.2f}")
            for side, equal in same.items():
                print(f"dataset of {side} identical to ray's (timing columns aside): {equal}")
            fixed = _overhead(root, args.limit, args.n, args.cap, args.overhead_tasks)
            _projection(init, fixed["per_task"], fixed["per_run"])
    finally:
        ray.shutdown()
    print(load_line())
    print(
        f"RESULT ray_scaling {ratio:.2f} x local/ray wall, median of {args.rounds} alternating rounds "
        f"(best-of {best:.2f}x{ref}; same {threads} cores on both sides: local {threads} threads, "
        f"ray {threads} workers x 1 thread; goal > 1; Ray overhead {fixed['per_task']:.3f} s per task + "
        f"{fixed['per_run']:.2f} s per run, ray.init {init:.1f} s once)"
    )


if __name__ == "__main__":
    main()
