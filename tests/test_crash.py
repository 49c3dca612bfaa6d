"""A run SIGKILLed at random points and resumed equals a run never interrupted."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from castillo_core.engine.dataset import read_table
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
