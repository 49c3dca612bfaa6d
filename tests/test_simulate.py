"""The scheduling simulator: known answers on hand-made queues, then the real command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from castillo_predictors.simulate import FCFS, ORACLE, Jobs, QueueConfig, draw_jobs, schedule, simulate_policies

from tests.helpers import castillo


def test_one_slot_all_at_once_matches_hand_computation() -> None:
    arrivals = np.zeros(3)
    service = np.array([3.0, 1.0, 2.0])
    _, fcfs = schedule(arrivals, service, None, slots=1)
    assert fcfs.tolist() == [3.0, 4.0, 6.0]  # mean 13/3
    _, sjf = schedule(arrivals, service, service, slots=1)
    assert sjf.tolist() == [6.0, 1.0, 3.0]  # mean 10/3


def test_an_idle_slot_waits_for_the_next_arrival() -> None:
    start, finish = schedule(np.array([0.0, 10.0]), np.array([1.0, 1.0]), None, slots=1)
    assert start.tolist() == [0.0, 10.0] and finish.tolist() == [1.0, 11.0]


def test_slots_serve_in_parallel() -> None:
    _, finish = schedule(np.zeros(4), np.array([4.0, 4.0, 1.0, 1.0]), None, slots=2)
    assert finish.tolist() == [4.0, 4.0, 5.0, 5.0]
    _, finish = schedule(np.zeros(4), np.array([4.0, 4.0, 1.0, 1.0]), np.array([4.0, 4.0, 1.0, 1.0]), slots=2)
    assert finish.tolist() == [5.0, 5.0, 1.0, 1.0]


def _stream(n: int = 4000, seed: int = 1, load: float = 0.9) -> tuple[Jobs, QueueConfig]:
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1.0, rng.lognormal(5.5, 1.0, size=n).round())
    queue = QueueConfig(slots=4, tokens_per_second=50.0)
    rate = load * queue.slots * queue.tokens_per_second / lengths.mean()
    return Jobs(np.cumsum(rng.exponential(1 / rate, size=n)), lengths, np.arange(n)), queue


def test_oracle_beats_fcfs_and_a_perfect_predictor_recovers_all_of_it() -> None:
    jobs, queue = _stream()
    rng = np.random.default_rng(2)
    noisy = jobs.lengths * rng.lognormal(0.0, 0.5, size=len(jobs.lengths))
    results = simulate_policies(jobs, {"perfect": jobs.lengths, "noisy": noisy, "reversed": -jobs.lengths}, queue)
    assert results[ORACLE]["mean_jct"] <= results[FCFS]["mean_jct"]
    assert results["spf:perfect"]["recovered"] == pytest.approx(1.0)
    assert results["spf:perfect"]["mean_jct"] == pytest.approx(results[ORACLE]["mean_jct"])
    assert 0.0 < results["spf:noisy"]["recovered"] < 1.0
    assert results["spf:reversed"]["recovered"] < 0.0  # longest-first is worse than FCFS
    assert results[FCFS]["recovered"] == 0.0
    # Work-conserving policies serve the same work: throughput barely differs.
    assert results[ORACLE]["throughput_tokens"] == pytest.approx(results[FCFS]["throughput_tokens"], rel=0.05)


def test_a_constant_predictor_is_fcfs() -> None:
    jobs, queue = _stream(500)
    results = simulate_policies(jobs, {"constant": np.full(len(jobs.lengths), 7.0)}, queue)
    assert results["spf:constant"]["mean_jct"] == results[FCFS]["mean_jct"]


def test_job_draws_are_deterministic_and_use_the_responses() -> None:
    import pyarrow as pa

    rows = pa.table({"output_sizes": [[10, 20], [300, 500]], "output_mean": [15.0, 400.0]})
    a, rate_a = draw_jobs(rows, 200, QueueConfig(slots=2, tokens_per_second=10.0), np.random.default_rng(5))
    b, rate_b = draw_jobs(rows, 200, QueueConfig(slots=2, tokens_per_second=10.0), np.random.default_rng(5))
    assert np.array_equal(a.arrivals, b.arrivals) and np.array_equal(a.lengths, b.lengths) and rate_a == rate_b
    assert set(a.lengths.tolist()) <= {10.0, 20.0, 300.0, 500.0}
    assert rate_a == pytest.approx(0.9 * 2 * 10.0 / a.lengths.mean())
    assert np.all(np.diff(a.arrivals) > 0)


def test_ten_thousand_jobs_take_well_under_a_second() -> None:
    """About 0.05 s on an idle core; the bound leaves room for a loaded shared machine."""
    jobs, queue = _stream(10_000)
    began = time.perf_counter()
    schedule(jobs.arrivals, jobs.lengths / queue.tokens_per_second, jobs.lengths, queue.slots)
    assert time.perf_counter() - began < 3.0


def test_simulate_command_on_a_fake_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo("run", "--backend", "fake", "--corpus", "tiny", "-C", "size=40", "-n", "4", "--quiet", "--out", str(out))
    args = ("simulate", str(out), "--predictor", "mean", "--jobs", "300", "--slots", "2", "--seed", "4")
    first = json.loads(castillo(*args, "--json").stdout)
    again = json.loads(castillo(*args, "--json").stdout)
    assert first == again  # deterministic
    policies = first["policies"]
    assert list(policies) == [FCFS, "spf:mean", ORACLE]
    assert policies[ORACLE]["mean_jct"] <= policies[FCFS]["mean_jct"]
    assert first["offered_load"] == pytest.approx(0.9)
    table = castillo(*args).stdout
    assert "spf:mean" in table and "recovered" in table
    bad = castillo("simulate", str(out), "--predictor", "mean", "--slots", "0", check=False)
    assert bad.returncode == 2 and "--slots" in bad.stderr
