"""The engine end to end through the real `castillo` command (in-process), on the fake backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from castillo_core.engine.dataset import read_table
from castillo_core.engine.schema import V1_COLUMNS
from tests.helpers import castillo

RUN = ("run", "--backend", "fake", "--corpus", "tiny", "--quiet")


def _prompts(out: Path):  # type: ignore[no-untyped-def]
    return read_table(out, "prompts").sort_by("prompt_id")


def test_run_writes_both_tables_with_v1_columns_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "-n", "6", "--max-new-tokens", "100", "--seed", "3", "--out", str(out))
    prompts = _prompts(out)
    responses = read_table(out, "responses")
    assert prompts.num_rows == 12 and responses.num_rows == 72
    part = next((out / "prompts").rglob("part-*.parquet"))
    assert tuple(pq.read_schema(part).names[: len(V1_COLUMNS)]) == V1_COLUMNS
    assert part.parent.name == "Tiny" and part.parent.parent.name == "fake--model"
    rows = prompts.to_pylist()
    for row in rows:
        sizes = np.array(row["output_sizes"])
        assert len(sizes) == 6 == row["n_samples"]
        assert row["output_mean"] == pytest.approx(sizes.mean())
        assert row["output_std"] == pytest.approx(sizes.std())
        assert row["output_percentiles"]["p99"] == pytest.approx(np.percentile(sizes, 99))
        assert row["output_min"] == sizes.min() and row["output_max"] == sizes.max()
        capped = [r == "length" for r in row["finish_reasons"]]
        assert row["n_length_capped"] == sum(capped)
        assert all(s == 100 for s, c in zip(sizes, capped, strict=True) if c)
        assert row["top_k"] == 0 and row["top_p"] == 1.0 and row["temp"] == 1.0
        assert row["split"] == "test" and row["backend"] == "fake" and row["max_new_tokens"] == 100
        assert row["longest_response"] and row["shortest_response"]
    # each prompt has its own seed; sample i uses seed + i
    seeds = [r["seed"] for r in rows]
    assert len(set(seeds)) == len(seeds)
    by_prompt = {}
    for r in responses.to_pylist():
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for row in rows:
        samples = sorted(by_prompt[row["prompt_id"]], key=lambda r: r["sample_index"])
        assert [s["seed"] for s in samples] == [row["seed"] + i for i in range(6)]
        assert [s["output_tokens"] for s in samples] == row["output_sizes"]
        assert {s["sample_id"] for s in samples} == {row["sample_id"]}
    assert any(r["n_length_capped"] for r in rows) and any(not r["n_length_capped"] for r in rows)
    meta = json.loads(pq.read_schema(part).metadata[b"castillo"])
    assert meta["schema_version"] == "1.0"
    assert meta["provenance"]["generation"]["n"] == 6
    manifest = json.loads((out / "manifest.json").read_text())
    (cell,) = manifest["cells"].values()
    assert cell["status"] == "done" and cell["prompts_done"] == 12
    assert manifest["runs"][-1]["status"] == "done"


def test_same_seed_reproduces_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        castillo(*RUN, "--seed", seed, "--out", str(tmp_path / name))
    a, b, c = (_prompts(tmp_path / n) for n in "abc")
    assert a.column("output_sizes").to_pylist() == b.column("output_sizes").to_pylist()
    assert a.column("output_sizes").to_pylist() != c.column("output_sizes").to_pylist()


def test_rerun_resumes_and_a_larger_limit_extends(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "--limit", "5", "--out", str(out))
    again = castillo(*RUN, "--limit", "5", "--out", str(out))
    assert "skipped" in again.stdout
    assert len(list((out / "prompts").rglob("part-*.parquet"))) == 1
    castillo(*RUN, "--limit", "9", "--out", str(out))
    ids = _prompts(out).column("prompt_id").to_pylist()
    assert len(ids) == 9 == len(set(ids))


def test_a_changed_config_is_refused_saying_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "--temperature", "0.7", "--out", str(out))
    proc = castillo(*RUN, "--temperature", "0.9", "--out", str(out), check=False)
    assert proc.returncode == 2
    assert "generation.temperature: 0.7 -> 0.9" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _prompts(out).num_rows == 12  # nothing lost


def test_rejections_are_summarized_and_strict_fails(tmp_path: Path) -> None:
    proc = castillo(*RUN, "-C", "reject_every=4", "--out", str(tmp_path / "a"))
    assert "3 record(s) rejected" in proc.stderr and "record 3" in proc.stderr
    proc = castillo(*RUN, "-C", "reject_every=4", "--strict", "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2 and "--strict" in proc.stderr and "tiny record 3" in proc.stderr


def test_bad_options_and_grid_files_name_the_culprit(tmp_path: Path) -> None:
    proc = castillo(*RUN, "-B", "mean_tokens=lots", "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "backend fake: option mean_tokens" in proc.stderr
    grid = tmp_path / "grid.toml"
    grid.write_text('[[models]]\nbackend = "fake"\n[[corpora]]\nname = "tiny"\nlimt = 3\n')
    proc = castillo("run", "--config", str(grid), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    assert f"grid file {grid}: key corpora.0.limt" in proc.stderr
    grid.write_text('[[models]]\nbackend = "fake"\n[[corpora]]\nname = "tiny"\nlimit = 3\n[generation]\nn = 0\n')
    proc = castillo("run", "--config", str(grid), "--out", str(tmp_path / "o"), check=False)
    assert "key generation.n" in proc.stderr


def test_grid_file_runs_models_x_corpora(tmp_path: Path, example_env: dict[str, str]) -> None:
    grid = tmp_path / "grid.toml"
    out = tmp_path / "out"
    grid.write_text(
        f'out = "{out}"\n'
        "[generation]\nn = 3\nmax_new_tokens = 50\n"
        '[[models]]\nbackend = "fake"\nmodel = "acme/small"\n'
        '[[models]]\nbackend = "fake"\nmodel = "acme/large"\noptions = { mean_tokens = 30 }\n'
        '[[corpora]]\nname = "tiny"\nlimit = 4\n'
        '[[corpora]]\nname = "proverbs"\n'
    )
    castillo("run", "--config", str(grid), "--quiet", env=example_env)  # proverbs: the example plugin's corpus
    summary = json.loads(castillo("show", str(out), "--json").stdout)
    cells = {(r["model"], r["dataset"]): r["prompts"] for r in summary}
    assert cells == {
        ("acme--small", "Tiny"): 4,
        ("acme--small", "Proverbs"): 5,
        ("acme--large", "Tiny"): 4,
        ("acme--large", "Proverbs"): 5,
    }
    means = {(r["model"], r["dataset"]): r["mean_length"] for r in summary}
    assert means[("acme--large", "Tiny")] < means[("acme--small", "Tiny")]


def test_no_text_drops_response_texts_only(tmp_path: Path) -> None:
    castillo(*RUN, "--no-text", "--out", str(tmp_path / "o"))
    responses = read_table(tmp_path / "o", "responses")
    assert responses.column("text").null_count == responses.num_rows
    assert all(_prompts(tmp_path / "o").column("longest_response").to_pylist())


def test_leftovers_of_a_crash_are_cleaned_and_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "--out", str(out))
    before = _prompts(out)
    prompts_part = next((out / "prompts").rglob("part-*.parquet"))
    # a crash between the two renames leaves responses without their prompts partner
    prompts_part.unlink()
    (prompts_part.parent / ".tmp-part-half-written.parquet").write_bytes(b"PAR1 half")
    proc = castillo(*RUN, "--out", str(out))
    assert "without their prompts partner" in proc.stderr
    assert "temporary file" in proc.stderr
    after = _prompts(out)
    assert after.column("output_sizes").to_pylist() == before.column("output_sizes").to_pylist()
    assert read_table(out, "responses").num_rows == 12 * 10
    assert list((out / "_quarantine").rglob("part-*.parquet"))


def test_backend_failure_keeps_finished_prompts_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = castillo(*RUN, "-B", "fail_after=5", "--flush-every", "1000000", "--out", str(out), check=False)
    assert proc.returncode != 0
    assert _prompts(out).num_rows == 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"][-1]["status"] == "failed"
    castillo(*RUN, "--out", str(out))
    ids = _prompts(out).column("prompt_id").to_pylist()
    assert len(ids) == 12 == len(set(ids))


@pytest.mark.slow  # ~20 s: a real SIGINT to a deliberately slowed run of 400 prompts, then its resume
def test_sigint_flushes_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [*RUN, "-B", "delay=0.05", "-C", "size=400", "--flush-every", "1000000", "--out", str(out)]
    # a real process and a real SIGINT (the resume runs in-process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "castillo_core.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "re-run the same command to resume" in stderr
    done = _prompts(out).num_rows
    assert 0 < done < 400
    castillo(*args)
    ids = _prompts(out).column("prompt_id").to_pylist()
    assert len(ids) == 400 == len(set(ids))


def test_json_log_mode_prints_json_lines(tmp_path: Path) -> None:
    proc = castillo("run", "--backend", "fake", "--corpus", "tiny", "--log-json", "--out", str(tmp_path / "o"))
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines() if line.startswith("{")]
    assert "run_start" in events and "cell_start" in events and events[-2:] == ["cell_end", "run_end"]


def test_show_summarizes_per_model_and_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "--max-new-tokens", "60", "--out", str(out))
    (row,) = json.loads(castillo("show", str(out), "--json").stdout)
    prompts = _prompts(out)
    means = np.array(prompts.column("output_mean").to_pylist())
    stds = np.array(prompts.column("output_std").to_pylist())
    assert row["prompts"] == 12
    assert row["mean_length"] == pytest.approx(means.mean())
    assert row["mean_std"] == pytest.approx(stds.mean())
    assert row["mean_cv"] == pytest.approx((stds / means).mean())
    capped = sum(prompts.column("n_length_capped").to_pylist())
    assert row["share_capped"] == pytest.approx(capped / 120)
    text = castillo("show", str(out)).stdout
    assert "fake--model" in text and "Tiny" in text
    proc = castillo("show", str(tmp_path / "nothing"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
