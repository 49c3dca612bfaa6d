"""The house after the core redesign: pluggy validation, analysis as plugins, declared columns, one manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from castillo_core import (
    Column,
    GenerationConfig,
    Manifest,
    Prompt,
    Rendered,
    build_requests,
    declared_columns,
    detectors,
    flag_column,
    flag_count_column,
    hookimpl,
    prompt_seed,
    read_manifest,
    read_schema,
)
from castillo_core.plugins import Plugins
from tests.helpers import castillo, make_distribution

MISSPELLED = """
from castillo_core import Corpus, Prompt, hookimpl

class Limerick(Corpus):
    name = "limerick"
    dataset = "Limerick"
    def iter_prompts(self):
        yield Prompt(dataset=self.dataset, prompt_text="Write a limerick.")

@hookimpl
def castillo_register_corpus(register):  # missing the final "a"
    register(Limerick)
"""

UNMARKED_MISSPELLED = MISSPELLED.replace("@hookimpl\n", "").replace(
    "castillo_register_corpus", "castillo_register_corpra"
)

GOOD = """
from castillo_core import Corpus, Prompt, hookimpl

class Haiku(Corpus):
    name = "haiku"
    dataset = "Haiku"
    def iter_prompts(self):
        yield Prompt(dataset=self.dataset, prompt_text="Write a haiku.")

@hookimpl
def castillo_register_corpora(register):
    register(Haiku)
"""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, in-process (plugins are rediscovered when ``env`` changes discovery)."""
    return castillo(*args, env=env, check=False)


@pytest.mark.parametrize(("source", "wrong"), [(MISSPELLED, "corpus"), (UNMARKED_MISSPELLED, "corpra")])
def test_misspelled_hook_is_that_plugins_failure_with_did_you_mean(tmp_path: Path, source: str, wrong: str) -> None:
    root = make_distribution(tmp_path / "site", "castillo-limerick", "limerick", "castillo_limerick", source)
    make_distribution(root, "castillo-haiku", "haiku", "castillo_haiku", GOOD)
    proc = _cli("plugins", "--json", env={"PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr
    records = {r["name"]: r for r in json.loads(proc.stdout)}
    assert records["limerick"]["status"] == "failed"
    assert f"castillo_register_{wrong}" in records["limerick"]["error"]
    assert "did you mean 'castillo_register_corpora'" in records["limerick"]["error"]
    assert records["haiku"]["status"] == "loaded", "one plugin's misspelling must not affect another"
    assert records["haiku"]["provides"] == ["corpus:haiku"]


def test_one_plugin_raising_in_a_hook_leaves_the_others_registered() -> None:
    plugins = Plugins()

    class Boom:
        @hookimpl
        def castillo_register_corpora(self, register: object) -> None:
            raise RuntimeError("boom")

    class Fine:
        @hookimpl
        def castillo_register_corpora(self, register: Any) -> None:
            from castillo_core.testing import TinyCorpus

            register(TinyCorpus)

    first = plugins.register_plugin(Boom(), "boom")
    second = plugins.register_plugin(Fine(), "fine")
    assert first.status == "failed" and "boom" in (first.error or "")
    assert second.status == "loaded" and second.provides == ["corpus:tiny"]
    assert plugins.corpus("tiny").name == "tiny"


def test_analysis_commands_come_from_plugins_and_disappear_without_them() -> None:
    full = _cli("--help")
    for command in ("report", "sanitize", "export", "import", "predict", "simulate"):
        assert f" {command} " in full.stdout, command
    lean = _cli("--help", env={"CASTILLO_DISABLE_PLUGINS": "report,views,formats,predictors"})
    assert lean.returncode == 0
    for command in ("report", "sanitize", "export", "import", "predict", "simulate"):
        assert f" {command} " not in lean.stdout, command
    for command in ("run", "plugins", "list", "show", "prompts"):
        assert f" {command} " in lean.stdout, command
    listed = {r["name"]: r for r in json.loads(_cli("plugins", "--json").stdout)}
    assert "command:report" in listed["report"]["provides"]
    assert {"command:export", "command:import"} <= set(listed["formats"]["provides"])


def test_metric_columns_declare_their_roles_in_the_stored_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli(
        *("run", "--backend", "fake", "--corpus", "tiny", "--limit", "3", "-n", "2", "--quiet", "--out", str(out)),
        *("--metric", "degeneration", "--metric", "length"),
    )
    assert proc.returncode == 0, proc.stderr
    prompts = {c.name: c for c in declared_columns(read_schema(out, "prompts"))}
    responses = {c.name: c for c in declared_columns(read_schema(out, "responses"))}
    assert detectors(read_schema(out, "prompts")) == {
        "v1-length": flag_count_column("v1-length"),
        "repetition": flag_count_column("repetition"),
    }
    assert responses[flag_column("repetition")].role == "flag"
    assert responses[flag_column("repetition")].type == "bool"
    assert responses["n_words"].role == "count"
    assert prompts["repetition_score_max"].role == "score"
    assert prompts["repetition_score_max"].detector == "repetition"
    # the declaration travels in every part, so a reader needs no plugin installed
    part = next((out / "responses").rglob("part-*.parquet"))
    field = pq.read_schema(part).field(flag_column("v1-length"))
    assert field.metadata[b"castillo.role"] == b"flag"


def test_column_helpers_own_the_naming_rule() -> None:
    flag = Column.flag("my-detector", "why")
    count = Column.flag_count("my-detector")
    assert (flag.name, flag.type, flag.role) == ("degenerate_my_detector", "bool", "flag")
    assert (count.name, count.type, count.role) == ("n_degenerate_my_detector", "int64", "flag_count")
    with pytest.raises(ValueError, match="needs its detector"):
        Column("x", "bool", role="flag")
    with pytest.raises(ValueError, match="unknown role"):
        Column("x", "bool", role="verdict")  # type: ignore[arg-type]  # the point of the test


def test_manifest_is_one_typed_record_with_one_reader_and_writer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("run", "--backend", "fake", "--corpus", "tiny", "--limit", "2", "-n", "2", "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = read_manifest(out)
    assert isinstance(manifest, Manifest)
    (entry,) = manifest.cells.values()
    assert entry.status == "done" and entry.prompts_done == 2 and entry.provenance is not None
    assert manifest.runs[-1].status == "done"
    data = json.loads((out / "manifest.json").read_text())
    data["future_key"] = {"kept": True}  # a newer castillo's key survives a round trip
    (out / "manifest.json").write_text(json.dumps(data))
    again = _cli(
        "run", "--backend", "fake", "--corpus", "tiny", "--limit", "2", "-n", "2", "--quiet", "--out", str(out)
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "manifest.json").read_text())["future_key"] == {"kept": True}
    (out / "manifest.json").write_text('{"cells": []}')
    broken = _cli("run", "--backend", "fake", "--corpus", "tiny", "--limit", "2", "--quiet", "--out", str(out))
    assert broken.returncode == 2 and "manifest.json does not look like a castillo manifest" in broken.stderr


def test_build_requests_is_the_one_seed_rule() -> None:
    prompts = [Prompt(dataset="d", prompt_text=t) for t in ("a", "b", "c")]
    rendered = [Rendered(input_size=1) for _ in prompts]
    config = GenerationConfig(n=4, seed=7)
    requests = build_requests(prompts, rendered, config)
    assert [r.key for r in requests] == [0, 1, 2]
    assert [r.seed for r in requests] == [prompt_seed(7, p.prompt_id, 4) for p in prompts]
    assert len({r.seed for r in requests}) == 3 and all(r.n == 4 for r in requests)


def test_version_imports_no_plugin_and_listing_imports_no_numerical_library() -> None:
    code = (
        "import sys\n"
        "from castillo_core.cli import main\n"
        "sys.argv = ['castillo', '--version']\n"
        "main()\n"
        "print(sorted(m for m in sys.modules if m.startswith('castillo_') and m != 'castillo_core'"
        " and not m.startswith('castillo_core.')))\n"
        "from castillo_core.cli.info import backend_rows, corpus_rows, metric_detail_rows\n"
        "backend_rows(); corpus_rows(); metric_detail_rows()\n"
        "print(sorted(m for m in ('numpy', 'pyarrow', 'pandas', 'torch', 'sklearn') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, plugins, numerical = proc.stdout.splitlines()
    assert version.startswith("castillo, version ")
    assert plugins == "[]", "--version imports no plugin"
    assert numerical == "[]", "listing backends, corpora and metrics imports no numerical library"
