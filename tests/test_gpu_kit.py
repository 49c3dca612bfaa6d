"""The GPU kit (bench/gpu/) keeps working while no GPU is lent.

- Its CPU mode runs the whole measurement a GPU run makes (a random model with the stop bias,
  v1's strategy, castillo's transformers backend, the bare ceiling) and ends in the RESULT line.
- The wheelhouse plan covers everything castillo and its transformers backend need on the GPU
  machine, and the wheelhouse check catches what would break the offline install there.
- (slow) The driver installs castillo's own wheels, built here, with ``pip --no-index --target``
  and runs the CPU mode from that directory, as it does on the GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO

KIT = REPO / "bench" / "gpu"
RESULT = re.compile(r"^RESULT gpu_transformers (\d+\.\d+) x \(goal >= 5x v1, >= 80% of ceiling; castillo at \d+%")


def _prepare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_kit_prepare", KIT / "prepare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTILLO_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def _check_figures(figures: dict, out: str) -> None:
    """What a CPU-mode run must show, whatever the machine's speed."""
    sides = {side["name"].split(",")[0].split(":")[0]: side for side in figures["sides"]}
    v1, castillo, ceiling = sides["v1"], figures["sides"][2], sides["ceiling"]
    args = figures["args"]
    assert v1["completions"] == figures["v1_prompts"] * args["n"]
    assert figures["sides"][1]["completions"] == v1["completions"]  # castillo on v1's prompts
    assert castillo["completions"] == ceiling["completions"] == figures["prompts"] * args["n"]
    assert ceiling["tokens"] == castillo["tokens"]  # the ceiling does castillo's work
    # The stop bias works in both generation paths: lengths vary, few reach the cap.
    stops = figures["stops"]
    assert stops["stop_probability"] == pytest.approx(stops["aimed"], rel=0.05)
    assert stops["p10"] > stops["aimed"] / 3 and stops["p90"] < stops["aimed"] * 3  # steady, position to position
    for side in (v1, castillo):
        assert 1 < side["mean_length"] < args["max_new_tokens"] * 0.8, side
        assert side["std_length"] > 1 and side["capped_share"] < 0.5, side
    assert 0.4 < v1["mean_length"] / castillo["mean_length"] < 2.5
    assert figures["v1_slots_per_token"] > 1.2  # v1's batches run on after rows stop
    assert figures["castillo_over_v1"] > 0 and figures["castillo_over_ceiling"] > 0
    assert RESULT.match(out.strip().splitlines()[-1]), out[-2000:]


@pytest.mark.slow
def test_cpu_mode_measures_all_three_sides(tmp_path: Path) -> None:
    figures_path = tmp_path / "kit.json"
    proc = subprocess.run(
        [sys.executable, str(KIT / "measure.py"), "--cpu", "--json", str(figures_path)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    figures = json.loads(figures_path.read_text())
    _check_figures(figures, proc.stdout)
    assert figures["dtype"] == "fp32" and figures["args"]["device"] == "cpu"
    assert "requirements: all met" in proc.stdout


def test_wheelhouse_plan_covers_what_castillo_needs_on_the_gpu_machine() -> None:
    prepare = _prepare()
    items = {item.name: item for item in prepare.plan()}
    assert set(items) == {
        "castillo",
        "castillo-transformers",
        "pydantic",
        "pydantic-core",
        "annotated-types",
        "typing-inspection",
        "typing-extensions",
        "transformers",
    }
    version = (REPO / "VERSION").read_text().strip()
    assert items["castillo"].version == items["castillo-transformers"].version == version
    from importlib.metadata import version as installed

    for name in ("pydantic", "pydantic-core", "transformers"):
        assert items[name].version == installed(name)  # the GPU runs what is tested here
    # Every requirement of castillo and its transformers backend, through the carried wheels,
    # either travels or is on the GPU machine (a new dependency of castillo_core shows here).
    assert prepare.uncovered() == []
    assert {item.name for item in prepare.plan(download=False)} == {"castillo", "castillo-transformers"}


def test_wheelhouse_check_catches_what_breaks_the_offline_install(tmp_path: Path) -> None:
    prepare = _prepare()
    items = prepare.plan()
    wheels = tmp_path / "wheels"
    wheels.mkdir()

    def filename(item: object, tag: str = "py3-none-any") -> str:
        return f"{item.name.replace('-', '_')}-{item.version}-{tag}.whl"  # type: ignore[attr-defined]

    core_tag = "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64"
    for item in items:
        (wheels / filename(item, core_tag if item.name == "pydantic-core" else "py3-none-any")).write_bytes(b"x")
    (wheels / "requirements.txt").write_text("".join(f"{item.pin}\n" for item in items))
    assert prepare.check(wheels, items) == []

    core = next(item for item in items if item.name == "pydantic-core")
    (wheels / filename(core, core_tag)).unlink()
    (wheels / filename(core, "cp311-cp311-manylinux_2_17_x86_64")).write_bytes(b"x")
    (wheels / "annotated_types-0.0.1-py3-none-any.whl").write_bytes(b"x")
    (wheels / "stray-1.0-py3-none-any.whl").write_bytes(b"x")
    (wheels / "requirements.txt").write_text("castillo==0\n")
    problems = "\n".join(prepare.check(wheels, items))
    assert "does not install on the GPU machine" in problems and "cp311" in problems
    assert "2 wheels of annotated-types" in problems
    assert "stray-1.0-py3-none-any.whl: not in the plan" in problems
    assert "does not pin exactly" in problems
    shutil.rmtree(wheels)
    assert any(p.startswith("no wheel of castillo==") for p in prepare.check(wheels, items))

    fits = prepare.wheel_fits_gpu
    assert fits("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    assert fits("regex-2026.1.1-cp312-cp312-manylinux_2_28_x86_64.whl")
    assert fits("cryptography-46.0.0-cp38-abi3-manylinux_2_28_x86_64.whl")
    assert not fits("pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_aarch64.whl")
    assert not fits("pydantic_core-2.50.5-cp312-cp312-macosx_11_0_arm64.whl")
    assert not fits("pydantic_core-2.50.5-cp313-cp313-manylinux_2_17_x86_64.whl")


@pytest.mark.slow
def test_driver_installs_castillo_wheels_offline_and_runs_the_cpu_mode(tmp_path: Path) -> None:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and timeout")
    kit = tmp_path / "kit"
    prepare = _prepare()
    # castillo's own wheels only: pydantic and the rest come from this venv (its Python is not
    # the GPU machine's 3.12, so the cp312 pydantic-core could not be installed here anyway).
    assert prepare.main(["--no-download", "--out", str(kit)]) == 0
    site, out = tmp_path / "site", tmp_path / "out"
    env = _env()
    env.update(KIT_PYTHON=sys.executable, KIT_WHEELS=str(kit / "wheels"), KIT_SITE=str(site), OUT=str(out))
    proc = subprocess.run(
        ["bash", str(KIT / "run.sh"), "--cpu"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "2 wheels installed into" in proc.stdout
    assert f"castillo_core from {site / 'castillo_core'}" in proc.stdout
    assert (site / "castillo_transformers" / "scheduler.py").is_file()
    figures = json.loads((out / "gpu_kit.json").read_text())
    _check_figures(figures, (out / "gpu_kit.log").read_text())
