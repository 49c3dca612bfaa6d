"""Presets, --dry-run, `castillo prompts` and `castillo install`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.helpers import castillo, castillo_process


def test_preset_lists_and_command_line_overrides_it(tmp_path: Path) -> None:
    presets = json.loads(castillo("list", "presets", "--json").stdout)
    v1 = next(p for p in presets if p["name"] == "castillo-v1")
    assert len(v1["models"]) == 13 and len(v1["corpora"]) == 7
    assert v1["generation"]["max_new_tokens"] == 15_000
    out = tmp_path / "out"
    proc = castillo(
        "run",
        "--preset",
        "castillo-v1",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "--limit",
        "2",
        "--max-new-tokens",
        "40",
        "--dry-run",
        "--log-json",
        "--out",
        str(out),
    )
    plan = json.loads(proc.stdout)
    assert len(plan["cells"]) == 13
    assert {c["max_new_tokens"] for c in plan["cells"]} == {40}
    assert {c["n"] for c in plan["cells"]} == {10}
    assert plan["cells"][0]["model"] == "meta-llama--Llama-3.2-1B-Instruct"
    assert not out.exists(), "a dry run writes nothing"


def test_preset_without_backend_says_what_to_pass(tmp_path: Path) -> None:
    proc = castillo(
        "run", "--preset", "castillo-v1", "--corpus", "tiny", "--dry-run", "--out", str(tmp_path / "o"), check=False
    )
    assert proc.returncode == 2 and "pass --backend" in proc.stderr


def test_dry_run_counts_what_is_left_and_estimates(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ("run", "--backend", "fake", "--corpus", "tiny", "-n", "4", "--out", str(out))
    castillo(*base, "--limit", "5", "--quiet")
    plan = json.loads(
        castillo(*base, "--dry-run", "--log-json", "--estimate-from", str(out), "--tokens-per-second", "50").stdout
    )
    (cell,) = plan["cells"]
    assert cell["prompts"] == 12 and cell["done"] == 5 and cell["remaining"] == 7 and cell["samples"] == 28
    assert cell["estimate_basis"] == "model x dataset"
    assert cell["expected_tokens"] == pytest.approx(28 * cell["mean_length"])
    assert cell["expected_seconds"] == pytest.approx(cell["expected_tokens"] / 50)
    table = castillo(*base, "--dry-run", "--estimate-from", str(out), "--tokens-per-second", "50").stdout
    assert "total: 28 completions" in table


def test_no_model_uses_the_backend_default_and_says_so(tmp_path: Path) -> None:
    proc = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--limit", "1", "--quiet", "--out", str(tmp_path / "o")
    )
    assert "using its default model fake/model" in proc.stderr


def test_prompts_shows_what_a_run_would_send(tmp_path: Path) -> None:
    lines = castillo("prompts", "--corpus", "tiny", "--limit", "4", "--json").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    castillo("run", "--backend", "fake", "--corpus", "tiny", "--limit", "4", "--quiet", "--out", str(tmp_path / "o"))
    from castillo_core.engine.dataset import read_table

    stored = set(read_table(tmp_path / "o", "prompts").column("prompt_id").to_pylist())
    assert {r["prompt_id"] for r in records} == stored


@pytest.mark.slow
def test_install_registers_a_local_plugin_package_and_uninstall_removes_it(tmp_path: Path) -> None:
    package = tmp_path / "castillo-limerick"
    (package / "castillo_limerick").mkdir(parents=True)
    (package / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "castillo-limerick"
        version = "0.2.0"
        [project.entry-points.castillo]
        limerick = "castillo_limerick"
        [tool.setuptools]
        packages = ["castillo_limerick"]
    """)
    )
    (package / "castillo_limerick" / "__init__.py").write_text(
        textwrap.dedent("""
        from castillo_core import Corpus, Prompt, hookimpl

        class Limerick(Corpus):
            name = "limerick"
            dataset = "Limerick"
            def iter_prompts(self):
                yield Prompt(dataset=self.dataset, prompt_text="Write a limerick about a cat.")

        @hookimpl
        def castillo_register_corpora(register):
            register(Limerick)
    """)
    )
    # Real pip installs into this environment: each command runs in a fresh interpreter,
    # which discovers what the one before installed.
    try:
        proc = castillo_process("install", str(package))
        assert "plugin limerick (castillo-limerick 0.2.0, loaded): corpus:limerick" in proc.stdout
        assert "limerick" in castillo_process("list", "corpora").stdout
    finally:
        proc = castillo_process("uninstall", "castillo-limerick")
    assert "removed plugin limerick" in proc.stdout
