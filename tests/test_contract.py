"""The plugin contract with strangers: what a deliberately misbehaving third-party plugin cannot do.

Every plugin here is its own distribution (a module plus a .dist-info declaring a
``castillo`` entry point, on PYTHONPATH), discovered exactly like an installed package.
Each test asserts what the user sees: exit code, one line naming the plugin, the rows
stored before and after, and that nothing is generated twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from castillo_core import read_manifest, read_table
from tests.helpers import castillo, make_distribution

FRAGILE = """
import os
import numpy as np
from pydantic import BaseModel
from castillo_core import Column, Metric, hookimpl

CALLS = [0]  # score() calls in this process: the first is castillo's synthetic probe


class Fragile(Metric):
    name = "fragile"
    version = "1"

    class Options(BaseModel):
        scale: float = 1.0

    def response_columns(self):
        return [Column("fragile_score", "float64", "tokens x scale")]

    def prompt_columns(self):
        return [Column("fragile_max", "float64")]

    def score(self, batch):
        CALLS[0] += 1
        mode = os.environ.get("FRAGILE_MODE", "ok")
        if mode != "ok" and CALLS[0] >= int(os.environ.get("FRAGILE_FROM_CALL", "5")):
            if mode == "raise":
                raise ZeroDivisionError("no scale for this text")
            if mode == "none":
                return None
            if mode == "strings":
                return {"fragile_score": ["high"] * len(batch)}
            if mode == "dict-none":
                return {"fragile_score": [None] * len(batch)}
        return {"fragile_score": batch.output_tokens * float(self.context.options["scale"])}

    def aggregate(self, batch):
        return {"fragile_max": batch.reduce(batch.column("fragile_score"), "max")}

@hookimpl
def castillo_register_metrics(register):
    register(Fragile)
"""

ECHO_CORPUS = """
from castillo_core import Corpus, Prompt, hookimpl

class Echo(Corpus):
    name = "echo"
    dataset = "Echo"
    def iter_prompts(self):
        for text in ("Name a capital city.", "What is the capital of Australia?", "Count to three."):
            yield Prompt(dataset=self.dataset, prompt_text=text)

@hookimpl
def castillo_register_corpora(register):
    register(Echo)
"""

ECHO_WITH_BROKEN_METRICS = (
    ECHO_CORPUS
    + """
@hookimpl
def castillo_register_metrics(register):
    raise RuntimeError("metrics hook broken on purpose")
"""
)

NEEDY = """
from pydantic import BaseModel
from castillo_core import Column, Metric, hookimpl

class Needy(Metric):
    name = "needy"
    description = "needs a threshold"

    class Options(BaseModel):
        threshold: float

    def response_columns(self):
        return [Column("needy_over", "bool")]

    def score(self, batch):
        return {"needy_over": batch.output_tokens > self.context.options["threshold"]}

@hookimpl
def castillo_register_metrics(register):
    register(Needy)
"""

CRASHING_BACKEND = """
import os
from castillo_core import Backend, Completion, ModelInfo, PromptResult, Rendered, SamplingSettings, hookimpl

class Crashy(Backend):
    name = "crashy"
    default_model = "crashy/model"

    def open(self):
        return ModelInfo(model=self.model_id(self.spec))

    def sampling(self, config):
        return SamplingSettings.from_config(config)

    def render(self, prompts, max_prompt_tokens):
        return [Rendered(input_size=len(p.prompt_text.split())) for p in prompts]

    def generate(self, requests, settings, config):
        limit = int(os.environ.get("CRASHY_AFTER", "1000"))
        for done, request in enumerate(requests):
            if done >= limit:
                raise RuntimeError("GPU fell off the bus")
            yield PromptResult(key=request.key, completions=tuple(
                Completion(sample_index=i, seed=request.seed + i, output_tokens=3, finish_reason="stop", text="a b c")
                for i in range(request.n)
            ))

@hookimpl
def castillo_register_backends(register):
    register(Crashy)
"""


def _site(tmp_path: Path, *plugins: tuple[str, str]) -> dict[str, str]:
    root = tmp_path / "site"
    for name, source in plugins:
        make_distribution(root, f"castillo-{name}", name, f"castillo_{name}", source)
    return {"PYTHONPATH": str(root)}


def _run(out: Path, env: dict[str, str], *extra: str, check: bool = False) -> Any:
    args = (
        "run",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "-n",
        "2",
        "--flush-every",
        "2",
        "--quiet",
        "--out",
        str(out),
    )
    return castillo(*args, *extra, env=env, check=check)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


# 1. a metric never loses generated work --------------------------------------------------------


@pytest.mark.parametrize("mode", ["raise", "none", "strings", "dict-none"])
def test_a_failing_metric_loses_no_completion_and_a_rerun_generates_nothing_again(tmp_path: Path, mode: str) -> None:
    env = _site(tmp_path, ("fragile", FRAGILE))
    out = tmp_path / "out"
    failed = _run(out, {**env, "FRAGILE_MODE": mode}, "--metric", "fragile")
    assert failed.returncode == 2
    line = _one_line(failed.stderr)
    assert "metric fragile (castillo-fragile)" in line
    if mode in {"strings", "dict-none"}:
        assert "fragile_score" in line and ("str" in line or "None" in line)
    stored = read_table(out, "prompts")
    assert stored.num_rows == 4, "prompts 1-4 were generated: all four are stored (the 4th without the metric)"
    assert read_table(out, "responses").num_rows == 8
    # the metric is fixed: the re-run computes its columns for the stored part, and generates only the rest
    fixed = _run(out, env, "--metric", "fragile", check=True)
    assert "\tnew=8\t" in fixed.stdout, fixed.stdout
    responses = read_table(out, "responses")
    assert responses.num_rows == 24 and responses.column("fragile_score").null_count == 0
    prompts = read_table(out, "prompts")
    assert prompts.num_rows == 12 and prompts.column("fragile_max").null_count == 0


# 2. a metric fails before any model loads ----------------------------------------------------------


def test_a_metric_that_always_fails_is_caught_before_anything_is_generated(tmp_path: Path) -> None:
    env = _site(tmp_path, ("fragile", FRAGILE))
    out = tmp_path / "out"
    proc = _run(out, {**env, "FRAGILE_MODE": "strings", "FRAGILE_FROM_CALL": "1"}, "--metric", "fragile")
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "metric fragile (castillo-fragile)" in line and "before any model was loaded" in line
    assert not list(out.rglob("part-*.parquet"))
    bad_option = _run(out, env, "--metric", "fragile", "-M", "fragile.scale=lots")
    assert bad_option.returncode == 2 and "metric fragile: option scale" in _one_line(bad_option.stderr)


# 3. a metric that needs an option never breaks other runs --------------------------------------------


def test_a_metric_needing_an_option_is_not_a_default_and_list_says_so(tmp_path: Path) -> None:
    env = _site(tmp_path, ("needy", NEEDY))
    out = tmp_path / "out"
    plain = _run(out, env, check=True)
    assert "Tiny\tdone" in plain.stdout
    assert "needy_over" not in read_table(out, "responses").column_names
    listed = {m["name"]: m for m in json.loads(castillo("list", "metrics", "--json", env=env).stdout)}
    assert listed["needy"]["default"] is False and listed["length"]["default"] is True
    assert listed["needy"]["options"]["threshold"]["required"] is True
    missing = _run(tmp_path / "o2", env, "--metric", "needy")
    assert missing.returncode == 2 and "metric needy: option threshold: Field required" in _one_line(missing.stderr)
    given = _run(tmp_path / "o3", env, "--metric", "needy", "-M", "needy.threshold=50", check=True)
    assert "Tiny\tdone" in given.stdout


# 4. options and versions are part of what is recorded: no silent mixing --------------------------------


def test_metric_options_are_recorded_and_a_mixing_resume_is_refused(tmp_path: Path) -> None:
    env = _site(tmp_path, ("fragile", FRAGILE))
    out = tmp_path / "out"
    _run(out, env, "--metric", "fragile", "-M", "fragile.scale=2", "--limit", "4", check=True)
    (cell,) = read_manifest(out).cells.values()
    assert cell.metrics == {"fragile": {"distribution": "castillo-fragile", "version": "1", "options": {"scale": 2.0}}}
    mixed = _run(out, env, "--metric", "fragile", "-M", "fragile.scale=3")
    assert mixed.returncode == 2
    assert "fragile.options.scale: 2.0 -> 3.0" in mixed.stderr and "castillo rescore" in mixed.stderr
    assert read_table(out, "prompts").num_rows == 4
    for typo, expected in (("fragil.scale=3", "did you mean 'fragile'"), ("fragile.scal=3", "unknown option 'scal'")):
        proc = _run(out, env, "--metric", "fragile", "-M", typo)
        assert proc.returncode == 2 and expected in _one_line(proc.stderr)


# 5. rescore applies a metric (or new options) to stored data, no model ----------------------------------


def test_rescore_applies_a_new_metric_and_new_options_without_a_model(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, {}, "--metric", "length", "--limit", "6", check=True)
    env = _site(tmp_path, ("fragile", FRAGILE))
    first = castillo("rescore", str(out), "--metric", "fragile", "-M", "fragile.scale=0.5", "--json", env=env)
    summary = json.loads(first.stdout)
    assert summary["parts_rewritten"] == 6 and summary["responses"] == 12  # one prompt per part
    responses = read_table(out, "responses")
    tokens = responses.column("output_tokens").to_pylist()
    assert responses.column("fragile_score").to_pylist() == [t * 0.5 for t in tokens]
    assert "n_words" in responses.column_names, "the other metric's columns stay"
    again = json.loads(
        castillo("rescore", str(out), "--metric", "fragile", "-M", "fragile.scale=0.5", "--json", env=env).stdout
    )
    assert again["parts_rewritten"] == 0 and again["parts_unchanged"] == 6, "resumable: done parts are skipped"
    manifest = read_manifest(out)
    (cell,) = manifest.cells.values()
    assert set(cell.metrics or {}) == {"length", "fragile"} and manifest.rescores[0]["parts"] == 6
    # the run now resumes with both metrics, generating only new prompts
    more = _run(out, env, "--metric", "length", "--metric", "fragile", "-M", "fragile.scale=0.5", check=True)
    assert "\tnew=6\t" in more.stdout
    dropped = json.loads(castillo("rescore", str(out), "--drop", "fragile", "--json", env=env).stdout)
    assert dropped["parts_rewritten"] == 12 and "fragile_score" not in read_table(out, "responses").column_names


# 6. one plugin never knocks out another -------------------------------------------------------------------


def test_a_name_clash_affects_only_that_name_in_any_load_order(tmp_path: Path) -> None:
    other = FRAGILE.replace('"fragile_score"', '"other_score"').replace('"fragile_max"', '"other_max"')
    for first, second in (("aaa", "zzz"), ("zzz", "aaa")):  # entry points load in name order
        root = tmp_path / f"{first}{second}"
        make_distribution(
            root,
            "castillo-echo-tools",
            first,
            f"castillo_{first}",
            ECHO_CORPUS
            + FRAGILE.split("@hookimpl")[0].replace(
                "from castillo_core import Column, Metric, hookimpl", "from castillo_core import Column, Metric"
            )
            + "\n@hookimpl\ndef castillo_register_metrics(register):\n    register(Fragile)\n",
        )
        make_distribution(root, "castillo-other", second, f"castillo_{second}", other)
        env = {"PYTHONPATH": str(root)}
        records = {p["name"]: p for p in json.loads(castillo("plugins", "--json", env=env).stdout)}
        assert records[first]["status"] == records[second]["status"] == "loaded"
        assert "corpus:echo" in records[first]["provides"], "the unrelated corpus survives the clash"
        assert records[first]["conflicts"] and records[second]["conflicts"]
        out = tmp_path / f"out-{first}"
        ambiguous = castillo(
            "run",
            "--backend",
            "fake",
            "--corpus",
            "echo",
            "--metric",
            "fragile",
            "--out",
            str(out),
            env=env,
            check=False,
        )
        assert ambiguous.returncode == 2 and "castillo-echo-tools:fragile or castillo-other:fragile" in ambiguous.stderr
        picked = castillo(
            *("run", "--backend", "fake", "--corpus", "echo", "-n", "2", "--quiet", "--out", str(out)),
            *("--metric", "castillo-other:fragile"),
            env=env,
        )
        assert "Echo\tdone" in picked.stdout and "other_score" in read_table(out, "responses").column_names


def test_a_plugin_whose_one_hook_fails_keeps_its_other_registrations(tmp_path: Path) -> None:
    env = _site(tmp_path, ("echo", ECHO_WITH_BROKEN_METRICS))
    record = {p["name"]: p for p in json.loads(castillo("plugins", "--json", env=env).stdout)}["echo"]
    assert record["status"] == "partial" and record["provides"] == ["corpus:echo"]
    assert "metrics hook broken on purpose" in record["error"]
    run = castillo(
        "run", "--backend", "fake", "--corpus", "echo", "-n", "2", "--quiet", "--out", str(tmp_path / "o"), env=env
    )
    assert "Echo\tdone\tprompts=3" in run.stdout


# 7. a crashing backend: one line, the prompt, resumable, recorded ------------------------------------------


def test_a_backend_crash_is_one_line_recorded_and_resumable(tmp_path: Path) -> None:
    env = _site(tmp_path, ("crashy", CRASHING_BACKEND))
    out = tmp_path / "out"
    args = (
        "run",
        "--backend",
        "crashy",
        "--corpus",
        "tiny",
        "-n",
        "2",
        "--flush-every",
        "2",
        "--quiet",
        "--out",
        str(out),
    )
    crashed = castillo(*args, env={**env, "CRASHY_AFTER": "5"}, check=False)
    assert crashed.returncode == 2
    line = _one_line(crashed.stderr)
    assert "backend crashy failed" in line and "RuntimeError: GPU fell off the bus" in line
    assert "at prompt " in line and "re-run the same command to resume" in line
    assert read_table(out, "prompts").num_rows == 5
    (cell,) = read_manifest(out).cells.values()
    assert cell.status == "failed" and "GPU fell off the bus" in cell.errors[-1]
    show = json.loads(castillo("show", str(out), "--json").stdout)
    assert show[0]["status"] == "failed" and show[0]["prompts"] == 5 and show[0]["prompts_total"] == 12
    resumed = castillo(*args, env=env)
    assert "\tnew=7\t" in resumed.stdout
    assert json.loads(castillo("show", str(out), "--json").stdout)[0]["status"] == "done"
