"""Ray scaling: the same grid through the local executor and through Ray with 2 workers.

The grid is 2 models x 2 corpora on the real llama.cpp backend: two tiny random-weight
GGUFs written by tests/fixtures/tiny_gguf.py (different weight seeds) x the built-in
``tiny`` corpus and ``humaneval`` (``tiny`` alone where castillo-corpora is not
installed), N samples per prompt, one llama.cpp thread per model. Measured side by side
in one process, alternating A and B, fresh outputs each time:

- A, local: ``Engine.run`` with the local executor (one model after the other, 1 thread);
- B, ray: the same spec through ``RayExecutor`` on a local 2-CPU Ray instance started once
  (not timed per run; its start-up is reported apart): one task per model, 2 workers.

A's CPU time (this process) next to its wall time shows how much of a core one process
gets on the shared machine; B's tasks' times inside their workers show what two get.
Reported: median wall times, A/B (the speed-up on this 2-core machine), and Ray's fixed
overhead, measured on the ``fake`` backend (no model, next to no work) cut into 4 and then
into many tasks: the slope (extra wall time per extra task, 2 workers sharing them) is the
cost per task; what is left of the 4-task run over the local run is the cost per run (the
hub actor, worker processes starting, the final scan). Two cross-checks come from the
workers' own clocks: the gap between one task's end and the next one's start on the same
worker (Ray's dispatch), and the time a model-less task spends inside its worker (plugins,
store, parts). The datasets of A and B are compared row for row.

    python bench/ray_scaling.py            # 40 prompts per cell, N=10, cap 128, 3 repeats
    python bench/ray_scaling.py --quick    # 4 prompts, N=4, cap 24, 1 repeat (a smoke test)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="prompts per cell")
    parser.add_argument("-n", type=int, default=10, help="samples per prompt")
    parser.add_argument("--cap", type=int, default=128, help="max new tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-tasks", type=int, default=24, help="small fake-backend tasks for the overhead")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 4 prompts, N=4, cap 24, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.n, args.cap, args.repeats, args.overhead_tasks = 4, 4, 24, 1, 8
    logging.basicConfig(level=logging.WARNING)
    os.environ.pop("RAY_ADDRESS", None)

    import ray
    from castillo_ray.executor import RayExecutor

    from tests.fixtures.tiny_gguf import cached_tiny_gguf

    cache = REPO / ".pytest_cache" / "d" / "castillo-llamacpp-tiny"
    cache.mkdir(parents=True, exist_ok=True)
    ggufs = [cached_tiny_gguf(cache), cached_tiny_gguf(cache, seed=1)]
    models = [{"backend": "llamacpp", "model": str(g), "options": {"n_threads": 1}} for g in ggufs]
    corpora = _corpora(args.limit)
    print(f"machine: {os.cpu_count()} cores, {_cpu()}; load average {os.getloadavg()[0]:.1f}")
    print(
        f"grid: 2 tiny GGUFs x {', '.join(c['name'] for c in corpora)}; {args.limit} prompts per cell, "
        f"N={args.n}, cap {args.cap}, 1 llama.cpp thread per model"
    )

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    init = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory(prefix="castillo-ray-bench-") as tmp:
            root = Path(tmp)
            local_walls: list[float] = []
            ray_walls: list[float] = []
            same = True
            print(f"\nray.init (2 CPUs, local): {init:.1f} s, once\n")
            head = f"{'repeat':>6}  {'A: local s':>10}  {'A: CPU s':>8}  {'B: ray s':>9}  {'A/B':>5}"
            print(f"{head}  B: tasks in workers s")
            for repeat in range(args.repeats):
                a, b = root / f"local-{repeat}", root / f"ray-{repeat}"
                local_walls.append(_run(_spec(a, models, corpora, args.n, args.cap)))
                local_cpu = _run.cpu  # type: ignore[attr-defined]
                executor = RayExecutor()
                ray_walls.append(_run(_spec(b, models, corpora, args.n, args.cap), executor))
                same = same and _same(a, b)
                inside = " + ".join(f"{s.worker:.2f}" for s in executor.stats)
                print(
                    f"{repeat:>6}  {local_walls[-1]:>10.2f}  {local_cpu:>8.2f}  {ray_walls[-1]:>9.2f}  "
                    f"{local_walls[-1] / ray_walls[-1]:>5.2f}  {inside}"
                )
            local_med, ray_med = statistics.median(local_walls), statistics.median(ray_walls)
            ratio = local_med / ray_med
            print(f"{'median':>6}  {local_med:>10.2f}  {'':>8}  {ray_med:>9.2f}  {ratio:>5.2f}")
            print(f"datasets of A and B identical (timing columns aside): {same}")

            # Ray's fixed cost per task: the fake backend (no model) cut into few, then many tasks
            fake = [{"backend": "fake", "model": "m1"}, {"backend": "fake", "model": "m2"}]
            fake_corpora = [{"name": "tiny", "options": {"size": 2 * args.limit}}]
            local_fake = _run(_spec(root / "fake-local", fake, fake_corpora, args.n, args.cap))
            walls: dict[str, list[float]] = {"few": [], "many": []}
            counts: dict[str, int] = {}
            stats = []
            for kind in ("few", "many", "few", "many"):
                # per model 2 * limit prompts: 2 shards each (4 tasks), or about overhead_tasks in all
                shard = args.limit if kind == "few" else max(1, 4 * args.limit // args.overhead_tasks)
                executor = RayExecutor(shard_size=shard)
                out = root / f"fake-ray-{kind}-{len(stats)}"
                walls[kind].append(_run(_spec(out, fake, fake_corpora, args.n, args.cap), executor))
                counts[kind] = len(executor.tasks)
                stats.append(executor.stats)
            few, many = counts["few"], counts["many"]
            wall_few, wall_many = statistics.median(walls["few"]), statistics.median(walls["many"])
            per_task = (wall_many - wall_few) / ((many - few) / 2)  # 2 workers share the extra tasks
            per_run = wall_few - local_fake - per_task * few / 2
            gaps = []  # on one worker, from one task's end to the next one's start
            for run in stats:
                by_pid: dict[int, list[Any]] = {}
                for stat in run:
                    by_pid.setdefault(stat.pid, []).append(stat)
                for seq in by_pid.values():
                    seq.sort(key=lambda s: s.started_at)
                    gaps += [b.started_at - (a.started_at + a.worker) for a, b in itertools.pairwise(seq)]
            inside = statistics.median(s.worker for run in stats for s in run)
            print(f"\noverhead: fake backend (no model), 2 models x {2 * args.limit} prompts, N={args.n}")
            print(f"  local executor: {local_fake:.2f} s")
            print(f"  ray, {few} tasks: {wall_few:.2f} s; {many} tasks: {wall_many:.2f} s (medians of 2)")
            print(f"  per extra task (slope, 2 workers): {per_task:.3f} s")
            noise = " (zero within the noise)" if per_run < 0.05 else ""
            print(f"  per run (hub actor, worker start-up, final scan): {per_run:.2f} s{noise}")
            print(f"  between tasks on one worker (Ray dispatch): median {statistics.median(gaps):.3f} s")
            print(f"  inside a task without a model (plugins, store, parts): median {inside:.3f} s")
    finally:
        ray.shutdown()
    print(
        f"RESULT ray_scaling {ratio:.2f} x (local/ray wall, 2 workers on {os.cpu_count()} cores; goal > 1; "
        f"Ray overhead {per_task:.2f} s per task + {max(per_run, 0.0):.1f} s per run, ray.init {init:.1f} s once)"
    )


if __name__ == "__main__":
    main()
