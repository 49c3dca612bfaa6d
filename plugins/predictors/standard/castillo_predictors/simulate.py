"""What a length predictor is worth to a scheduler: a discrete-event simulation of one queue.

The model, deliberately small so that its numbers are easy to reason about:

- Jobs are ⟨prompt, model⟩ rows of the held-out prompts (the predictors never saw
  them), drawn uniformly with replacement. A job's true length is one response drawn
  from that row's ``output_sizes`` (one real completion, not the mean: a scheduler
  serves single responses, and the noise between samples is part of what it faces).
- Jobs arrive as a Poisson process of rate ``arrival_rate`` jobs/s.
- The server has ``slots`` batch slots; a job occupies one slot from start to finish
  and decodes at ``tokens_per_second`` (per slot, independent of how many slots are
  busy), so it takes ``length / tokens_per_second`` seconds. Prefill is not modelled.
- Scheduling is non-preemptive: when a slot frees, it takes the waiting job with the
  smallest key: arrival order (FCFS), predicted length (shortest-predicted-first), or
  true length (the oracle, shortest-job-first). Ties go to the earlier arrival.

Every policy sees the same job stream (common random numbers), so their differences
are the policies' and not the dice's. One binary heap of slot release times and one of
waiting jobs: O(J log J) per policy.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from castillo_core import ConfigError

log = logging.getLogger(__name__)

FCFS = "fcfs"
ORACLE = "oracle"


@dataclass(frozen=True)
class QueueConfig:
    """The serving queue: how fast jobs come and how fast they are served."""

    slots: int = 8
    tokens_per_second: float = 50.0
    arrival_rate: float | None = None  # jobs/s; None: set from ``load``
    load: float = 0.9  # offered load (share of capacity) when arrival_rate is None

    def check(self) -> None:
        """Refuse settings that make no queue, naming the option at fault."""
        if self.slots < 1:
            raise ConfigError(f"--slots {self.slots}: must be at least 1")
        if not self.tokens_per_second > 0:
            raise ConfigError(f"--tokens-per-second {self.tokens_per_second}: must be positive")
        if self.arrival_rate is not None and not self.arrival_rate > 0:
            raise ConfigError(f"--arrival-rate {self.arrival_rate}: must be positive")
        if self.arrival_rate is None and not self.load > 0:
            raise ConfigError(f"--load {self.load}: must be positive")


@dataclass(frozen=True)
class Jobs:
    """A job stream: arrival times (s), true lengths (tokens) and the rows they came from."""

    arrivals: np.ndarray
    lengths: np.ndarray
    rows: np.ndarray  # indices into the table the jobs were drawn from


def schedule(
    arrivals: np.ndarray, service: np.ndarray, keys: np.ndarray | None, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Start and finish times of every job under non-preemptive smallest-key-first.

    ``keys=None`` is FCFS. Arrivals must be sorted. When a slot frees at time ``t``, every
    job arrived by ``t`` competes; if none has, the slot waits for the next arrival.
    """
    n = len(arrivals)
    if slots < 1:
        raise ConfigError(f"--slots {slots}: must be at least 1")
    order = np.arange(n) if keys is None else np.asarray(keys, dtype=np.float64)
    arrival_list, key_list, service_list = arrivals.tolist(), order.tolist(), service.tolist()
    start = np.empty(n, dtype=np.float64)
    finish = np.empty(n, dtype=np.float64)
    free = [0.0] * min(slots, max(n, 1))  # release times of the slots (a heap)
    waiting: list[tuple[float, int]] = []
    push, pop, replace = heapq.heappush, heapq.heappop, heapq.heapreplace
    nxt = 0
    for _ in range(n):
        t = free[0]
        while nxt < n and arrival_list[nxt] <= t:
            push(waiting, (key_list[nxt], nxt))
            nxt += 1
        if not waiting:  # idle until the next arrival; then whoever arrived at that instant
            t = arrival_list[nxt]
            while nxt < n and arrival_list[nxt] <= t:
                push(waiting, (key_list[nxt], nxt))
                nxt += 1
        _, j = pop(waiting)
        begin = t if t > arrival_list[j] else arrival_list[j]
        end = begin + service_list[j]
        start[j], finish[j] = begin, end
        replace(free, end)
    return start, finish


def outcome(arrivals: np.ndarray, lengths: np.ndarray, finish: np.ndarray) -> dict[str, float]:
    """Mean, p50 and p99 job completion time (finish - arrival) and throughput."""
    jct = finish - arrivals
    span = float(finish.max() - arrivals.min()) if len(jct) else 0.0
    return {
        "mean_jct": float(jct.mean()),
        "p50_jct": float(np.percentile(jct, 50)),
        "p99_jct": float(np.percentile(jct, 99)),
        "throughput_jobs": len(jct) / span if span > 0 else float("nan"),
        "throughput_tokens": float(lengths.sum()) / span if span > 0 else float("nan"),
    }


def draw_jobs(rows: pa.Table, n_jobs: int, queue: QueueConfig, rng: np.random.Generator) -> tuple[Jobs, float]:
    """Draw ``n_jobs`` rows and one response length each, and Poisson arrival times.

    Returns the jobs and the arrival rate used (from ``queue.load`` when not given:
    load x slots x tokens/s / mean length, so that a load below 1 is a stable queue).
    """
    queue.check()
    if rows.num_rows == 0:
        raise ConfigError("no rows to draw jobs from")
    if n_jobs < 1:
        raise ConfigError(f"--jobs {n_jobs}: must be at least 1")
    picked = rng.integers(0, rows.num_rows, size=n_jobs)
    sizes = rows.column("output_sizes").to_pylist() if "output_sizes" in rows.column_names else None
    means = rows.column("output_mean").to_numpy(zero_copy_only=False).astype(np.float64)
    u = rng.random(n_jobs)
    lengths = np.empty(n_jobs, dtype=np.float64)
    for i, (row, draw) in enumerate(zip(picked.tolist(), u.tolist(), strict=True)):
        options = sizes[row] if sizes is not None else None
        lengths[i] = options[int(draw * len(options))] if options else round(means[row])
    lengths = np.maximum(lengths, 1.0)  # a job holds its slot for at least one token
    rate = queue.arrival_rate
    if rate is None:
        rate = queue.load * queue.slots * queue.tokens_per_second / float(lengths.mean())
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n_jobs))
    return Jobs(arrivals, lengths, picked), float(rate)


def simulate_policies(
    jobs: Jobs, predictions: Mapping[str, np.ndarray], queue: QueueConfig
) -> dict[str, dict[str, float]]:
    """FCFS, shortest-predicted-first per predictor and the oracle on one job stream.

    ``predictions`` holds one predicted length per job. Each policy's ``gain`` is its
    mean-JCT reduction against FCFS; ``recovered`` is that gain as a share of the
    oracle's (1.0: as good as knowing every length).
    """
    queue.check()
    service = jobs.lengths / queue.tokens_per_second
    keys: dict[str, np.ndarray | None] = {FCFS: None, **{f"spf:{n}": p for n, p in predictions.items()}}
    keys[ORACLE] = jobs.lengths
    results: dict[str, dict[str, float]] = {}
    for name, key in keys.items():
        _, finish = schedule(jobs.arrivals, service, key, queue.slots)
        results[name] = outcome(jobs.arrivals, jobs.lengths, finish)
    base, best = results[FCFS]["mean_jct"], results[ORACLE]["mean_jct"]
    for result in results.values():
        gain = base - result["mean_jct"]
        result["gain_vs_fcfs"] = gain / base if base > 0 else float("nan")
        result["recovered"] = gain / (base - best) if base - best > 1e-12 else float("nan")
    return results


@dataclass
class Simulation:
    """A simulation's settings and each policy's outcome."""

    dataset: str
    n_jobs: int
    slots: int
    tokens_per_second: float
    arrival_rate: float
    offered_load: float
    seed: int
    split: str
    policies: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def simulate(
    path: str | Path,
    names: Sequence[str] = (),
    queue: QueueConfig = QueueConfig(),
    n_jobs: int = 5000,
    seed: int = 0,
    split_seed: int = 0,
    test_share: float = 0.2,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    fitted_file: str | Path | None = None,
) -> Simulation:
    """Fit predictors of the mean length on the train prompts (or load them), then simulate.

    Jobs come from the held-out prompts only, so a predictor is judged on prompts it did
    not learn from, exactly as ``castillo predict eval`` judges it.
    """
    from castillo_predictors.evaluation import (
        SplitSpec,
        fit_predictors,
        load_fitted,
        load_rows,
        predict_checked,
        resolve_predictors,
        split_rows,
        target_values,
    )

    queue.check()
    rows = load_rows(path)
    notes: list[str] = []
    spec = SplitSpec(split_seed, test_share)
    bundle = load_fitted(fitted_file) if fitted_file else None
    if bundle is not None and bundle.get("split"):
        spec = SplitSpec(**bundle["split"])
    test, how = split_rows(rows, spec)
    train_rows, test_rows = rows.filter(pa.array(~test)), rows.filter(pa.array(test))
    if bundle is not None:
        predictors = {n: p for n, p in bundle["predictors"].items() if not names or n in names}
        notes.append(f"predictors loaded from {fitted_file} (target {bundle['target']}, {bundle.get('trained_on')})")
    else:
        classes, notes = resolve_predictors(names)
        predictors = fit_predictors(classes, train_rows, target_values(train_rows, "mean"), options or {})
    rng = np.random.default_rng(seed)
    jobs, rate = draw_jobs(test_rows, n_jobs, queue, rng)
    per_row = {n: predict_checked(n, p, test_rows) for n, p in predictors.items()}
    predictions = {n: values[jobs.rows] for n, values in per_row.items()}
    offered = rate * float(jobs.lengths.mean()) / (queue.slots * queue.tokens_per_second)
    if offered >= 1.0:
        notes.append(f"offered load {offered:.2f} >= 1: the queue grows without bound; JCTs depend on --jobs")
    result = Simulation(str(path), n_jobs, queue.slots, queue.tokens_per_second, rate, offered, seed, how, notes=notes)
    result.policies = simulate_policies(jobs, predictions, queue)
    return result
