"""Plugin discovery: entry points, broken plugins, allow/block lists, duplicates, laziness.

Fake distributions (tests.helpers.make_distribution) go on PYTHONPATH; `castillo` runs
in-process and rediscovers plugins for each call that sets PYTHONPATH or a CASTILLO_*
plugin variable. Two tests need a fresh interpreter: discovery of the installed example
plugin (an entry point found at start-up) and the import-time laziness of listing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from castillo_core import Backend, Column, Metric, ModelInfo, hookimpl
from castillo_core.api.errors import UnknownNameError
from castillo_core.plugins import Plugins, get_plugins
from tests.helpers import castillo, castillo_process, make_distribution

GOOD_CORPUS = """
from castillo_core import Corpus, Prompt, hookimpl

class Haiku(Corpus):
    name = "haiku"
    dataset = "Haiku"
    source_note = "test plugin"
    def iter_prompts(self):
        yield Prompt(dataset=self.dataset, prompt_text="Write a haiku about tests.")

@hookimpl
def castillo_register_corpora(register):
    register(Haiku)
"""

BROKEN_ON_IMPORT = """
raise RuntimeError("this plugin is broken on purpose")
"""

BROKEN_ON_REGISTER = """
from castillo_core import hookimpl

@hookimpl
def castillo_register_metrics(register):
    register(object)
"""

DUPLICATE_CORPUS = GOOD_CORPUS.replace('"Haiku"', '"HaikuTwo"')

HEAVY_BACKEND = """
from castillo_core import Backend, hookimpl

class Heavy(Backend):
    name = "heavy"
    requires = ("castillo_nonexistent_heavy_lib",)
    install_hint = "pip install castillo-heavy[gpu]"
    def open(self):
        import castillo_nonexistent_heavy_lib  # only when a model is opened
    def sampling(self, config): ...
    def render(self, prompts, max_prompt_tokens): ...
    def generate(self, requests, settings, config): ...

@hookimpl
def castillo_register_backends(register):
    register(Heavy)
"""


def _pythonpath(*roots: Path | str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(str(r) for r in roots)}


def _plugins_json(env: dict[str, str]) -> dict[str, dict]:
    out = castillo("plugins", "--json", env=env)
    return {p["name"]: p for p in json.loads(out.stdout)}


def test_installed_example_package_is_discovered_and_runs(tmp_path: Path, example_env: dict[str, str]) -> None:
    # A fresh interpreter finds the example distribution (its .dist-info on PYTHONPATH) at start-up.
    out = castillo_process("plugins", "--json", env=example_env)
    records = {p["name"]: p for p in json.loads(out.stdout)}
    example = records["example"]
    assert example["distribution"] == "castillo-example-plugin"
    assert example["status"] == "loaded"
    assert set(example["provides"]) == {"corpus:proverbs", "metric:digits"}
    out = tmp_path / "out"
    castillo_process(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "proverbs",
        "-n",
        "3",
        "--out",
        str(out),
        "--quiet",
        "--metric",
        "digits",
        env=example_env,
    )
    import pyarrow.parquet as pq

    prompts = pq.read_table(next((out / "prompts").rglob("part-*.parquet")))
    responses = pq.read_table(next((out / "responses").rglob("part-*.parquet")))
    assert prompts.num_rows == 5
    assert "digit_share_max" in prompts.column_names
    assert responses.num_rows == 15 and "digit_share" in responses.column_names


def test_plugin_broken_on_import_is_recorded_and_others_keep_working(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", "castillo-broken", "broken", "castillo_broken", BROKEN_ON_IMPORT)
    make_distribution(root, "castillo-haiku", "haiku", "castillo_haiku", GOOD_CORPUS)
    env = _pythonpath(root)
    records = _plugins_json(env)
    assert records["broken"]["status"] == "failed"
    assert "broken on purpose" in records["broken"]["error"]
    assert records["broken"]["distribution"] == "castillo-broken"
    assert records["broken"]["version"] == "0.3.0"
    assert records["haiku"]["status"] == "loaded"
    table = castillo("plugins", env=env).stdout
    assert "failed" in table and "broken on purpose" in table
    run = castillo(
        "run", "--backend", "fake", "--corpus", "haiku", "-n", "2", "--out", str(tmp_path / "o"), "--quiet", env=env
    )
    assert "Haiku\tdone\tprompts=1" in run.stdout


def test_plugin_failing_at_registration_is_recorded(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", "castillo-badreg", "badreg", "castillo_badreg", BROKEN_ON_REGISTER)
    records = _plugins_json(_pythonpath(root))
    assert records["badreg"]["status"] == "failed"
    assert "not a subclass of castillo_core.Metric" in records["badreg"]["error"]


def test_strict_mode_reraises_for_plugin_authors(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", "castillo-broken", "broken", "castillo_broken", BROKEN_ON_IMPORT)
    proc = castillo("plugins", env={**_pythonpath(root), "CASTILLO_STRICT_PLUGINS": "1"}, check=False)
    assert proc.returncode != 0
    assert "broken on purpose" in proc.stderr


def test_allow_and_block_lists(tmp_path: Path, example_env: dict[str, str]) -> None:
    root = make_distribution(tmp_path / "site", "castillo-haiku", "haiku", "castillo_haiku", GOOD_CORPUS)
    env = _pythonpath(root, example_env["PYTHONPATH"])
    only_haiku = _plugins_json({**env, "CASTILLO_LOAD_PLUGINS": "haiku"})
    assert only_haiku["haiku"]["status"] == "loaded"
    assert only_haiku["example"]["status"] == "disabled"
    none = _plugins_json({**env, "CASTILLO_LOAD_PLUGINS": ""})
    builtins = {n for n, r in none.items() if r["distribution"] == "castillo"}  # the core's own plugins
    assert "castillo_core.testing" in builtins and {none[n]["status"] for n in builtins} == {"builtin"}
    assert {r["status"] for n, r in none.items() if n not in builtins} == {"disabled"}
    blocked = _plugins_json({**env, "CASTILLO_DISABLE_PLUGINS": "haiku,example"})
    assert blocked["haiku"]["status"] == "disabled" and blocked["example"]["status"] == "disabled"
    proc = castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "haiku",
        "--out",
        str(tmp_path / "o"),
        env={**env, "CASTILLO_DISABLE_PLUGINS": "haiku"},
        check=False,
    )
    assert proc.returncode == 2
    assert "unknown corpus 'haiku'" in proc.stderr


def test_duplicate_name_affects_only_that_name_whatever_the_load_order(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", "castillo-haiku", "haiku", "castillo_haiku", GOOD_CORPUS)
    make_distribution(root, "castillo-haiku-fork", "haikufork", "castillo_haiku_fork", DUPLICATE_CORPUS)
    env = _pythonpath(root)
    records = _plugins_json(env)
    # neither plugin is dropped: both load, both report the clash, and name the qualified way out
    for name, dist in (("haiku", "castillo-haiku"), ("haikufork", "castillo-haiku-fork")):
        assert records[name]["status"] == "loaded"
        assert records[name]["provides"] == ["corpus:haiku"]
        assert any(f"use {dist}:haiku" in c for c in records[name]["conflicts"])
    out = tmp_path / "o"
    ambiguous = castillo("run", "--backend", "fake", "--corpus", "haiku", "--out", str(out), env=env, check=False)
    assert ambiguous.returncode == 2
    assert "castillo-haiku:haiku or castillo-haiku-fork:haiku" in ambiguous.stderr
    picked = castillo(
        *("run", "--backend", "fake", "--corpus", "castillo-haiku-fork:haiku", "-n", "2", "--quiet", "--out", str(out)),
        env=env,
    )
    assert "HaikuTwo\tdone\tprompts=1" in picked.stdout


def test_listing_backends_does_not_import_heavy_libraries(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", "castillo-heavy", "heavy", "castillo_heavy", HEAVY_BACKEND)
    listing = json.loads(castillo("list", "backends", "--json", env=_pythonpath(root)).stdout)
    heavy = next(r for r in listing if r["name"] == "heavy")
    assert heavy["available"] is False
    assert heavy["missing"] == ["castillo_nonexistent_heavy_lib"]
    assert heavy["install"] == "pip install castillo-heavy[gpu]"
    # In a fresh interpreter (a subprocess), listing everything imports none of the heavy libraries.
    code = (
        "import sys\n"
        "from castillo_core.cli.info import backend_rows, corpus_rows, metric_rows\n"
        "from castillo_core.plugins import get_plugins\n"
        "rows = backend_rows(); corpus_rows(); metric_rows()\n"
        "heavy = {'torch', 'transformers', 'vllm', 'llama_cpp', 'ray', 'datasets', 'matplotlib'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
        "print(len(get_plugins().records))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, count = proc.stdout.strip().splitlines()
    assert imported == "[]"
    assert int(count) >= 2


def test_using_an_unavailable_backend_says_how_to_install(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site", "castillo-heavy", "heavy", "castillo_heavy", HEAVY_BACKEND)
    proc = castillo(
        "run",
        "--backend",
        "heavy",
        "--model",
        "m",
        "--corpus",
        "tiny",
        "--out",
        str(tmp_path / "o"),
        env=_pythonpath(root),
        check=False,
    )
    assert proc.returncode == 2
    assert "pip install castillo-heavy[gpu]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_names_suggest_close_matches(tmp_path: Path, example_env: dict[str, str]) -> None:
    proc = castillo("run", "--backend", "fak", "--corpus", "tiny", "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2
    assert "unknown backend 'fak'" in proc.stderr and "did you mean 'fake'" in proc.stderr
    proc = castillo("run", "--backend", "fake", "--corpus", "tinny", "--out", str(tmp_path / "o"), check=False)
    assert "did you mean 'tiny'" in proc.stderr
    proc = castillo(
        "run",
        "--backend",
        "fake",
        "--corpus",
        "tiny",
        "--metric",
        "digit",
        "--out",
        str(tmp_path / "o"),
        env=example_env,  # digits: the example plugin's metric
        check=False,
    )
    assert "did you mean 'digits'" in proc.stderr


def test_trace_prints_each_hook_call(example_env: dict[str, str]) -> None:
    proc = castillo("plugins", env={**example_env, "CASTILLO_TRACE_PLUGINS": "1"})
    assert "hook castillo_register_backends -> plugin castillo_core.testing" in proc.stderr
    assert "hook castillo_register_corpora -> plugin example" in proc.stderr


class _Half(Metric):
    name = "half"

    def response_columns(self) -> list[Column]:
        return [Column("half_tokens", "int64")]

    def score(self, batch):  # type: ignore[no-untyped-def]
        return {"half_tokens": batch.output_tokens // 2}


class _HalfPlugin:
    @hookimpl
    def castillo_register_metrics(self, register) -> None:  # type: ignore[no-untyped-def]
        register(_Half)


def test_castillo_plugin_fixture_registers_for_one_test(castillo_plugin) -> None:  # type: ignore[no-untyped-def]
    plugins = castillo_plugin(_HalfPlugin(), name="half-plugin")
    assert plugins.metric("half") is _Half
    # the same name again, from another plugin: both kept, the bare name ambiguous, a qualified name picks
    castillo_plugin(_HalfPlugin(), name="half-plugin-2")
    with pytest.raises(UnknownNameError, match="more than one plugin"):
        plugins.metric("half")
    assert plugins.get("metric", "half-plugin-2:half").plugin == "half-plugin-2"


def test_fixture_removed_the_plugin_afterwards() -> None:
    with pytest.raises(UnknownNameError):
        get_plugins().metric("half")


def test_register_validates_the_contract() -> None:
    class NotImplemented_(Backend):
        name = "incomplete"

        def open(self) -> ModelInfo:
            return ModelInfo(model="x")

    class _Plugin:
        @hookimpl
        def castillo_register_backends(self, register) -> None:  # type: ignore[no-untyped-def]
            register(NotImplemented_)

    plugins = Plugins()
    record = plugins.register_plugin(_Plugin(), "incomplete-plugin")
    assert record.status == "failed"
    assert "does not implement generate, render, sampling" in (record.error or "")
    with pytest.raises(UnknownNameError):
        plugins.backend("incomplete")


class _Scaled(Metric):
    """Writes its run option into a column, proving options reach the metric."""

    name = "scaled"

    class Options(BaseModel):
        factor: float = 1.0

    def response_columns(self) -> list[Column]:
        return [Column("scaled_tokens", "float64")]

    def score(self, batch):  # type: ignore[no-untyped-def]
        factor = float(self.context.options.get("factor", 1.0))
        values = batch.output_tokens * factor
        values[0] = float("nan")  # "not computed" is stored as null
        return {"scaled_tokens": values}


class _ScaledPlugin:
    @hookimpl
    def castillo_register_metrics(self, register) -> None:  # type: ignore[no-untyped-def]
        register(_Scaled)


def test_metric_options_reach_the_metric_and_nan_is_stored_as_null(castillo_plugin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from castillo_core.cli.run import build_spec_dict
    from castillo_core.engine.dataset import read_table
    from castillo_core.engine.engine import Engine
    from castillo_core.engine.plan import load_spec

    plugins = castillo_plugin(_ScaledPlugin(), name="scaled-plugin")
    data, where = build_spec_dict(
        {
            "backend": "fake",
            "corpora": ("tiny",),
            "limit": 2,
            "n": 3,
            "out": str(tmp_path / "o"),
            "metrics": ("scaled",),
            "metric_options": ("scaled.factor=0.5",),
        }
    )
    Engine(load_spec(data, where), plugins).run()
    responses = read_table(tmp_path / "o", "responses")
    scaled = responses.column("scaled_tokens").to_pylist()
    tokens = responses.column("output_tokens").to_pylist()
    assert responses.column("scaled_tokens").null_count >= 1
    assert all(s == t * 0.5 for s, t in zip(scaled, tokens, strict=True) if s is not None)
