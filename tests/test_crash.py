"""A run killed at random points and resumed equals a run never interrupted.

Real processes and real signals (SIGKILL, SIGINT, SIGTERM); the reference run and the final
resume run in-process. The fake backend, llama.cpp in its deterministic mode (a tiny GGUF)
and transformers (a tiny fp32 model directory) must give exactly the uninterrupted run's rows;
llama.cpp's default mode gives what it guarantees (docs/backends/llamacpp.md): every prompt
once with its N samples and seeds, and nothing already stored rewritten.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from castillo_core.engine.dataset import read_table
from tests.fixtures.tiny_gguf import cached_tiny_gguf
from tests.fixtures.tiny_hf import cached_tiny_hf
from tests.helpers import castillo

ARGS = (
    "run",
    "--backend",
    "fake",
    "--corpus",
    "tiny",
    "-C",
    "size=300",
    "-n",
    "4",
    "--seed",
    "11",
    "--max-new-tokens",
    "80",
    "--quiet",
    "--flush-every",
    "8",
)


# llama.cpp on the tiny GGUF: 150 prompts (a few seconds), so the signals land mid-run.
LLAMA_ARGS = (
    "run",
    "--backend",
    "llamacpp",
    "--corpus",
    "tiny",
    "-C",
    "size=150",
    "-n",
    "4",
    "--seed",
    "11",
    "--max-new-tokens",
    "48",
    "--quiet",
    "--flush-every",
    "8",
    "-B",
    "n_threads=1",
    "-B",
    "n_parallel=8",
)
HF_ARGS = (
    "run",
    "--backend",
    "hf",
    "--corpus",
    "tiny",
    "-C",
    "size=40",
    "-n",
    "4",
    "--seed",
    "11",
    "--max-new-tokens",
    "24",
    "--quiet",
    "--flush-every",
    "8",
    "-B",
    "threads=1",
    "-B",
    "max_batch_rows=6",
)
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)


def _canonical(out: Path, table: str) -> list[dict]:
    rows = read_table(out, table).to_pylist()
    for row in rows:
        row.pop("gen_time", None)
        row.pop("latency", None)
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[key] = "nan"  # NaN != NaN; a metric may legitimately produce it
    key = ("prompt_id", "sample_index") if table == "responses" else ("prompt_id",)
    return sorted(rows, key=lambda r: tuple(r[k] for k in key))


def _stored_parts(out: Path) -> int:
    return len(list((out / "prompts").rglob("part-*.parquet"))) if (out / "prompts").exists() else 0


def _interrupt(args: Sequence[str], out: Path, signals: Sequence[int], seed: int) -> list[int]:
    """Start ``castillo run`` in a subprocess once per signal and send it mid-run.

    Each attempt is signalled once it has stored something new (so the signal lands in
    generation, not during start-up), after a random extra moment. Returns the prompts stored
    after each signal that landed (a fast run on an idle machine may finish the grid before
    the last one: what matters is that some landed mid-run).
    """
    rng = random.Random(seed)
    landed: list[int] = []
    for sig in signals:
        before = _stored_parts(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "castillo_core.cli", *args, "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and _stored_parts(out) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        sent = proc.poll() is None
        if sent:
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a signal that did not stop it is a failure, not a hang
            proc.kill()
            proc.wait()
            raise AssertionError(f"castillo run did not stop within 60 s of {signal.Signals(sig).name}") from None
        if sent:
            landed.append(_prompt_count(out))
    return landed


def _prompt_count(out: Path) -> int:
    return read_table(out, "prompts").num_rows if (out / "prompts").exists() else 0


@pytest.mark.slow  # ~15 s: real kills of a deliberately slowed run
def test_sigkill_at_random_points_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    castillo(*ARGS, "--out", str(reference))

    out = tmp_path / "killed"
    rng = random.Random(20261129)
    kills = 0
    for _ in range(4):
        # a real process and a real SIGKILL (the reference and the resume run in-process)
        proc = subprocess.Popen(
            [sys.executable, "-m", "castillo_core.cli", *ARGS, "-B", "delay=0.03", "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        time.sleep(rng.uniform(1.0, 2.5))  # each attempt gets through at most a few seconds of 9
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 3, "the run finished before it could be killed; raise size or delay"
    partial = read_table(out, "prompts").num_rows if (out / "prompts").exists() else 0
    assert partial < 300

    castillo(*ARGS, "-B", "delay=0.03", "--out", str(out))

    prompts = _canonical(out, "prompts")
    ids = [r["prompt_id"] for r in prompts]
    assert len(ids) == 300 == len(set(ids)), "every prompt exactly once"
    assert prompts == _canonical(reference, "prompts")
    assert _canonical(out, "responses") == _canonical(reference, "responses")


# -- real backends ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_gguf(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("llama_cpp")
    return cached_tiny_gguf(Path(request.config.cache.mkdir("castillo-llamacpp-tiny")))


@pytest.fixture(scope="session")
def tiny_hf(request: pytest.FixtureRequest) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return cached_tiny_hf(Path(request.config.cache.mkdir("castillo-tiny-hf")), stop_logit=6.0)


def _killed_then_resumed(args: Sequence[str], tmp_path: Path, total: int, seed: int) -> tuple[Path, Path, list]:
    """The uninterrupted reference, and the same run killed by each signal then resumed.

    Also returns the responses stored before the resume (the resume must keep them as they are).
    """
    reference = tmp_path / "reference"
    castillo(*args, "--out", str(reference))
    out = tmp_path / "killed"
    landed = _interrupt(args, out, SIGNALS, seed)
    assert len(landed) >= 2, "the run finished before it could be signalled; raise size"
    assert any(0 < count < total for count in landed), f"no signal landed mid-run (prompts stored: {landed})"
    stored = _canonical(out, "responses")
    castillo(*args, "--out", str(out))
    return reference, out, stored


@pytest.mark.slow  # ~20-40 s: three llama.cpp processes signalled mid-run
def test_llamacpp_deterministic_mode_resumes_bit_identical(tiny_gguf: Path, tmp_path: Path) -> None:
    args = (*LLAMA_ARGS, "--model", str(tiny_gguf), "-B", "deterministic=true")
    reference, out, _ = _killed_then_resumed(args, tmp_path, 150, seed=5)
    prompts = _canonical(out, "prompts")
    assert len({r["prompt_id"] for r in prompts}) == 150 == len(prompts), "every prompt exactly once"
    assert prompts == _canonical(reference, "prompts")
    assert _canonical(out, "responses") == _canonical(reference, "responses")


@pytest.mark.slow  # ~20-40 s
def test_llamacpp_default_mode_resume_keeps_prompts_seeds_and_stored_rows(tiny_gguf: Path, tmp_path: Path) -> None:
    """What the default mode guarantees: the same prompts, N samples each, the same seeds and
    prompt sizes; rows stored before the kill stay as they were. Texts and lengths of prompts
    that ran next to different neighbours may differ (floating-point batch composition)."""
    args = (*LLAMA_ARGS, "--model", str(tiny_gguf))
    reference, out, stored = _killed_then_resumed(args, tmp_path, 150, seed=6)
    ref_prompts, prompts = _canonical(reference, "prompts"), _canonical(out, "prompts")
    assert len({r["prompt_id"] for r in prompts}) == 150 == len(prompts), "every prompt exactly once"
    same = ("prompt_id", "prompt_text", "input_size", "seed", "n_samples", "config_hash")
    assert [{k: r[k] for k in same} for r in prompts] == [{k: r[k] for k in same} for r in ref_prompts]
    responses, ref_responses = _canonical(out, "responses"), _canonical(reference, "responses")
    keys = ("prompt_id", "sample_index", "seed")
    assert [tuple(r[k] for k in keys) for r in responses] == [tuple(r[k] for k in keys) for r in ref_responses]
    assert all(1 <= r["output_tokens"] <= 48 for r in responses)
    final = {(r["prompt_id"], r["sample_index"]): r for r in responses}
    assert stored and all(final[(r["prompt_id"], r["sample_index"])] == r for r in stored)


@pytest.mark.slow  # ~30-60 s: three torch processes
def test_transformers_resumes_bit_identical(tiny_hf: Path, tmp_path: Path) -> None:
    """Each prompt is prefilled alone and its samples draw from their own random streams; on the
    tiny fp32 model the decode batches' rounding never moves a token (docs/backends/transformers.md
    says when it can: bf16/fp16), so a resume changes nothing."""
    args = (*HF_ARGS, "--model", str(tiny_hf))
    reference, out, _ = _killed_then_resumed(args, tmp_path, 40, seed=7)
    prompts = _canonical(out, "prompts")
    assert len({r["prompt_id"] for r in prompts}) == 40 == len(prompts), "every prompt exactly once"
    assert prompts == _canonical(reference, "prompts")
    assert _canonical(out, "responses") == _canonical(reference, "responses")
