"""Packaging that can be published: one version, consistent ranges, extras that install what runs.

Every pyproject of the tree is read afresh (a plugin added under plugins/ is checked too):
the version is setuptools' dynamic one from the root VERSION file, every requirement on a
castillo distribution is pinned to VERSION's release series, and each extra of ``castillo``
names versioned plugin distributions together with the third-party libraries they need.
Also here: what a partial install says (``castillo report`` without matplotlib).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import REPO, castillo

ROOT_PYPROJECT = REPO / "pyproject.toml"
PLUGIN_PYPROJECTS = sorted(REPO.glob("plugins/*/*/pyproject.toml"))
# Extras of `castillo` that `all` leaves out, and why (see the comment in pyproject.toml).
NOT_IN_ALL = {"castillo-vllm"}  # CUDA wheels whose torch/transformers pins fight the transformers backend's


def _load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _version() -> Version:
    return Version((REPO / "VERSION").read_text().strip())


def _series(version: Version) -> SpecifierSet:
    """The range of ``version``'s release series: >=X.Y,<X.Y+1 (a pre-release is its own floor)."""
    lower = str(version) if version.is_prerelease else f"{version.major}.{version.minor}"
    return SpecifierSet(f">={lower},<{version.major}.{version.minor + 1}")


def _requirements(project: dict[str, Any]) -> list[tuple[str, Requirement]]:
    """Every requirement of a [project]: ("" for dependencies, else the extra's name)."""
    found = [("", Requirement(r)) for r in project.get("dependencies", [])]
    for extra, reqs in project.get("optional-dependencies", {}).items():
        found += [(extra, Requirement(r)) for r in reqs]
    return found


def _plugin_names() -> dict[str, Path]:
    return {canonicalize_name(_load(p)["project"]["name"]): p for p in PLUGIN_PYPROJECTS}


def test_the_tree_has_the_root_and_its_plugins() -> None:
    assert _load(ROOT_PYPROJECT)["project"]["name"] == "castillo"
    names = _plugin_names()
    assert {"castillo-llamacpp", "castillo-corpora", "castillo-metrics", "castillo-views", "castillo-report"} <= set(
        names
    )
    assert all(n.startswith("castillo-") for n in names), sorted(names)


@pytest.mark.parametrize(
    "pyproject", [ROOT_PYPROJECT, *PLUGIN_PYPROJECTS], ids=lambda p: str(p.parent.relative_to(REPO))
)
def test_every_distribution_reads_the_one_version_file(pyproject: Path) -> None:
    data = _load(pyproject)
    project = data["project"]
    assert "version" not in project, f"{pyproject}: a static version; run python scripts/set_version.py"
    assert "version" in project.get("dynamic", []), pyproject
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"file": "VERSION"}, pyproject
    version_file = pyproject.parent / "VERSION"
    if pyproject != ROOT_PYPROJECT:
        # A relative link, so that it works in every clone; setuptools reads no file outside a project.
        assert version_file.is_symlink(), f"{version_file} must link to the root VERSION"
        assert not os.path.isabs(os.readlink(version_file))
        assert version_file.resolve() == (REPO / "VERSION").resolve()
    assert version_file.read_text().strip() == str(_version())
    # setuptools>=77: SPDX license strings (the table form stops building in 2027).
    assert data["build-system"]["requires"] == ["setuptools>=77"], pyproject
    assert project.get("license") == "Apache-2.0", pyproject


@pytest.mark.parametrize("pyproject", PLUGIN_PYPROJECTS, ids=lambda p: str(p.parent.relative_to(REPO)))
def test_plugins_require_castillo_of_the_same_series(pyproject: Path) -> None:
    series = _series(_version())
    ours = {"castillo", *_plugin_names()}
    reqs = _requirements(_load(pyproject)["project"])
    assert any(r.name == "castillo" for extra, r in reqs if extra == ""), f"{pyproject}: no castillo dependency"
    for extra, req in reqs:
        if canonicalize_name(req.name) in ours:
            where = f"{pyproject} {extra or 'dependencies'}: {req}"
            assert req.specifier == series, f"{where} is not pinned to {series} (run python scripts/set_version.py)"


def _extras() -> dict[str, list[Requirement]]:
    project = _load(ROOT_PYPROJECT)["project"]
    return {extra: [Requirement(r) for r in reqs] for extra, reqs in project["optional-dependencies"].items()}


def _expand(extra: str, extras: dict[str, list[Requirement]]) -> list[Requirement]:
    """The requirements of one extra of castillo, following castillo[...] self-references."""
    out: list[Requirement] = []
    for req in extras[extra]:
        if req.name == "castillo":
            for sub in sorted(req.extras):
                out += _expand(sub, extras)
        else:
            out.append(req)
    return out


def test_castillo_extras_name_versioned_plugins_and_their_libraries() -> None:
    series = _series(_version())
    plugins = _plugin_names()
    extras = _extras()
    core = {canonicalize_name(Requirement(r).name) for r in _load(ROOT_PYPROJECT)["project"]["dependencies"]}
    named: set[str] = set()
    for extra, reqs in extras.items():
        if extra == "dev":
            continue
        for req in reqs:
            name = canonicalize_name(req.name)
            if name == "castillo":  # a self-reference: castillo[hub] pulls the hub extra
                assert not req.specifier and req.extras <= set(extras) - {"dev"}, f"extra {extra}: {req}"
            elif name.startswith("castillo-"):
                assert name in plugins, f"extra {extra}: {req} is no distribution of this tree"
                assert req.specifier == series, f"extra {extra}: {req} is not pinned to {series}"
                named.add(name)
        # What the extra's plugins need beyond castillo's own dependencies is named in the
        # extra too, with the plugin's own bounds: `pip install "castillo[x]"` shows what it brings.
        flat = _expand(extra, extras)
        libraries = {canonicalize_name(r.name): r for r in flat if not canonicalize_name(r.name).startswith("castillo")}
        for req in flat:
            if canonicalize_name(req.name) not in plugins:
                continue
            plugin = _load(plugins[canonicalize_name(req.name)])["project"]
            assert req.extras <= set(plugin.get("optional-dependencies", {})), f"extra {extra}: {req}"
            needed = [r for e, r in _requirements(plugin) if e == "" or e in req.extras]
            for lib in needed:
                name = canonicalize_name(lib.name)
                if name.startswith("castillo") or name in core or lib.marker is not None:
                    continue
                assert name in libraries, f"extra {extra}: {req.name} needs {lib}, which the extra does not name"
                assert libraries[name].specifier == lib.specifier, (
                    f"extra {extra}: {libraries[name]} but {req.name} requires {lib}"
                )
    assert named == set(plugins), f"plugins without an extra on castillo: {sorted(set(plugins) - named)}"
    in_all = {canonicalize_name(r.name) for r in _expand("all", extras)}
    assert in_all & set(plugins) == set(plugins) - NOT_IN_ALL
    assert not in_all & NOT_IN_ALL
    assert {"llama-cpp-python", "matplotlib", "ray", "datasets"} <= in_all


def test_the_llamacpp_extra_brings_the_backend_and_llama_cpp() -> None:
    llamacpp = {canonicalize_name(r.name): r for r in _extras()["llamacpp"]}
    assert set(llamacpp) == {"castillo-llamacpp", "llama-cpp-python"}
    assert llamacpp["castillo-llamacpp"].specifier == _series(_version())


# -- scripts/set_version.py -------------------------------------------------------------------


def _set_version_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("set_version", REPO / "scripts" / "set_version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_tree(tmp_path: Path) -> Path:
    """The root pyproject, VERSION and every plugin's pyproject and VERSION link, in tmp_path."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT_PYPROJECT, root / "pyproject.toml")
    shutil.copy(REPO / "VERSION", root / "VERSION")
    for pyproject in PLUGIN_PYPROJECTS:
        target = root / pyproject.parent.relative_to(REPO)
        target.mkdir(parents=True)
        shutil.copy(pyproject, target / "pyproject.toml")
        (target / "VERSION").symlink_to(os.readlink(pyproject.parent / "VERSION"))
    return root


def test_set_version_rewrites_version_and_every_range(tmp_path: Path) -> None:
    sv = _set_version_module()
    root = _copy_tree(tmp_path)
    # A plugin added later, still with a static version and unpinned castillo requirements.
    new = root / "plugins" / "executors" / "newthing"
    new.mkdir(parents=True)
    (new / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "castillo-newthing"\nversion = "0.1.0"\nkeywords = [\n    "castillo",\n]\n'
        'dependencies = [\n    "castillo",  # the core\n    "castillo-views[x] >=0.1; python_version >= \'3.10\'",\n'
        '    "numpy>=1.24",\n]\n\n[project.entry-points.castillo]\nnewthing = "castillo_newthing.plugin"\n'
    )
    changed = sv.apply("1.4.0rc1", root=root)
    assert "VERSION" in changed and "plugins/executors/newthing/pyproject.toml" in changed
    assert (root / "VERSION").read_text() == "1.4.0rc1\n"
    assert (new / "VERSION").is_symlink() and (new / "VERSION").read_text() == "1.4.0rc1\n"
    data = _load(new / "pyproject.toml")
    assert data["project"]["dynamic"] == ["version"] and "version" not in data["project"]
    assert data["project"]["name"] == "castillo-newthing" and data["project"]["keywords"] == ["castillo"]
    assert data["project"]["dependencies"] == [
        "castillo>=1.4.0rc1,<1.5",
        "castillo-views[x]>=1.4.0rc1,<1.5; python_version >= '3.10'",
        "numpy>=1.24",
    ]
    assert "# the core" in (new / "pyproject.toml").read_text()
    extras = _load(root / "pyproject.toml")["project"]["optional-dependencies"]
    assert "castillo-llamacpp>=1.4.0rc1,<1.5" in extras["llamacpp"]
    assert "llama-cpp-python>=0.3.36,<0.4" in extras["llamacpp"]
    assert all(r.startswith("castillo[") for r in extras["all"])  # self-references stay unversioned
    # The final release narrows the floor to the series; a second run changes nothing.
    sv.apply("1.4.0", root=root)
    assert _load(new / "pyproject.toml")["project"]["dependencies"][0] == "castillo>=1.4,<1.5"
    for pyproject in [root / "pyproject.toml", *root.glob("plugins/*/*/pyproject.toml")]:
        for _, req in _requirements(_load(pyproject)["project"]):
            if req.name.startswith("castillo-") or (req.name == "castillo" and pyproject.parent != root):
                assert req.specifier == SpecifierSet(">=1.4,<1.5"), f"{pyproject}: {req}"
    assert sv.apply("1.4.0", root=root) == []
    assert sv.main(["not-a-version"]) == 2
    assert sv.series_range("0.2.0") == ">=0.2,<0.3" and sv.series_range("2.10.3.post1") == ">=2.10,<2.11"


# -- partial installs ---------------------------------------------------------------------------


def test_report_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo("run", "--backend", "fake", "--corpus", "tiny", "-n", "2", "--quiet", "--out", str(out))
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'matplotlib\' (blocked by the test)", name="matplotlib")\n'
    )
    proc = castillo("report", str(out), "--quiet", env={"PYTHONPATH": str(shim.parent)}, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "matplotlib" in lines[0] and "pip install matplotlib" in lines[0]
    assert 'pip install "castillo-report"' in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (out / "report").exists()  # failed before writing anything
