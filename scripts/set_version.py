#!/usr/bin/env python3
"""Set the one version of every castillo distribution.

    python scripts/set_version.py 0.3.0     # bump: VERSION and every castillo range
    python scripts/set_version.py           # re-apply VERSION (after adding a plugin)

The file ``VERSION`` at the repository root is the only place a version is written. Every
distribution (``castillo`` at the root, each ``plugins/<kind>/<name>``) reads it through
setuptools' dynamic version (``[tool.setuptools.dynamic] version = { file = "VERSION" }``);
a plugin reads it through a ``VERSION`` symlink to the root file, since setuptools reads no
file outside a project's directory.

What cannot be dynamic is written here: every requirement on a castillo distribution of this
tree (a plugin's ``castillo``, ``castillo-views``, ...; the root's extras) gets the range of
VERSION's release series, ``>=X.Y,<X.Y+1`` (``>=0.2,<0.3`` for 0.2.0). The root's own
self-references (``castillo[llamacpp,...]`` in ``all``) stay unversioned. A plugin whose
pyproject still has a static ``version = "..."`` is switched to the dynamic one and gets its
symlink. Only the standard library is used; comments and layout of the files are kept.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
VERSION_FILE = ROOT / "VERSION"
PLUGIN_GLOB = "plugins/*/*/pyproject.toml"

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)((?:a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?")
_DYNAMIC_TABLE = (
    "[tool.setuptools.dynamic]\n"
    "# The one version of castillo, from the repository root (scripts/set_version.py).\n"
    'version = { file = "VERSION" }\n'
)


def series_range(version: str) -> str:
    """The requirement range of ``version``'s release series: ``>=0.2,<0.3`` for 0.2.0.

    A pre-release or dev release is its own lower bound (``>=0.3.0rc1,<0.4``): pip
    compares ``0.3.0rc1 < 0.3``, so ``>=0.3`` would refuse it.
    """
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise ValueError(f"version {version!r} is not X.Y.Z (optionally aN/bN/rcN, .postN, .devN)")
    major, minor = int(match.group(1)), int(match.group(2))
    lower = version if (match.group(4) or match.group(6)) else f"{major}.{minor}"
    return f">={lower},<{major}.{minor + 1}"


def read_version(root: Path = ROOT) -> str:
    version = (root / "VERSION").read_text().strip()
    series_range(version)  # validates
    return version


def pyprojects(root: Path = ROOT) -> list[Path]:
    """The root pyproject, then every plugin's (found afresh, so new plugins count)."""
    return [root / "pyproject.toml", *sorted(root.glob(PLUGIN_GLOB))]


def project_name(pyproject: Path) -> str:
    return tomllib.loads(pyproject.read_text())["project"]["name"]


def _code_and_comment(line: str) -> tuple[str, str]:
    """A TOML line split at its first ``#`` outside a string."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i], line[i:]
    return line, ""


def _bracket_depth(code: str) -> int:
    """``[`` minus ``]`` outside strings."""
    depth, quote = 0, ""
    for ch in code:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
    return depth


def _requirement_re(names: Iterable[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(
        r'"(?P<name>' + alternatives + r")(?![A-Za-z0-9_.\-])\s*(?P<extras>\[[^\]]*\])?\s*"
        r'(?P<spec>[<>=!~][^";]*)?(?P<marker>;[^"]*)?"'
    )


def rewrite(text: str, names: set[str], own_name: str, spec: str) -> str:
    """``text`` (a pyproject) with every requirement on ``names`` set to ``spec``.

    Only strings in ``[project] dependencies`` and in ``[project.optional-dependencies]``
    are touched; a requirement on ``own_name`` (an extra that pulls other extras of the same
    distribution) is left unversioned.
    """
    pattern = _requirement_re(names)

    def replace(match: re.Match[str]) -> str:
        name, extras, marker = match["name"], match["extras"] or "", match["marker"] or ""
        if name == own_name:
            return f'"{name}{extras}{marker}"'
        return f'"{name}{extras}{spec}{marker}"'

    out: list[str] = []
    table, key, depth = "", "", 0  # the table, the key of the open array, its bracket depth
    for line in text.splitlines(keepends=True):
        code, comment = _code_and_comment(line)
        stripped = code.strip()
        header = re.fullmatch(r"\[([^\[\]]+)\]", stripped)
        if depth == 0 and header:
            table = header.group(1).strip()
            out.append(line)
            continue
        if depth == 0:
            assigned = re.match(r"([A-Za-z0-9_.\-\"']+)\s*=", stripped)
            key = assigned.group(1) if assigned else ""
        depth = max(0, depth + _bracket_depth(code))
        in_requirements = table == "project.optional-dependencies" or (table == "project" and key == "dependencies")
        out.append(pattern.sub(replace, code) + comment if in_requirements else line)
    return "".join(out)


def make_dynamic(text: str) -> str:
    """A static ``[project] version = "..."`` becomes ``dynamic = ["version"]`` read from VERSION."""
    out, table = [], ""
    for line in text.splitlines(keepends=True):
        stripped = _code_and_comment(line)[0].strip()
        header = re.fullmatch(r"\[([^\[\]]+)\]", stripped)
        if header:
            table = header.group(1).strip()
        if table == "project" and re.fullmatch(r"version\s*=\s*(\"[^\"]*\"|'[^']*')", stripped):
            line = 'dynamic = ["version"]\n'
        out.append(line)
    text = "".join(out)
    if not re.search(r"^\[tool\.setuptools\.dynamic\]", text, re.M):
        text = text.rstrip("\n") + "\n\n" + _DYNAMIC_TABLE
    return text


def link_version(project_dir: Path, root: Path = ROOT) -> bool:
    """Give a plugin directory its ``VERSION -> ../../../VERSION`` symlink; True if made."""
    link = project_dir / "VERSION"
    target = os.path.relpath(root / "VERSION", project_dir)
    if link.is_symlink() and os.readlink(link) == target:
        return False
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    return True


def apply(version: str, root: Path = ROOT) -> list[str]:
    """Write ``version`` everywhere it belongs; the list of files changed."""
    spec = series_range(version)
    changed: list[str] = []
    version_file = root / "VERSION"
    if not version_file.exists() or version_file.read_text().strip() != version:
        version_file.write_text(version + "\n")
        changed.append("VERSION")
    files = pyprojects(root)
    names = {project_name(p) for p in files}
    for pyproject in files:
        text = pyproject.read_text()
        own = project_name(pyproject)
        new = rewrite(make_dynamic(text), names, own, spec)
        if new != text:
            tomllib.loads(new)  # never write a file that no longer parses
            pyproject.write_text(new)
            changed.append(str(pyproject.relative_to(root)))
        if pyproject.parent != root and link_version(pyproject.parent, root):
            changed.append(str((pyproject.parent / "VERSION").relative_to(root)))
    return changed


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python scripts/set_version.py [NEW_VERSION]", file=sys.stderr)
        return 2
    try:
        version = argv[0] if argv else read_version()
        changed = apply(version)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = series_range(version)
    print(f"castillo {version}: castillo distributions pinned to {spec}")
    for path in changed:
        print(f"  updated {path}")
    if not changed:
        print("  nothing to change")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
