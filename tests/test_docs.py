"""The docs' Python examples run: every ```python block, in order, one namespace per document.

A document is a contract only if its examples work, so each ```python block of the documents
below is executed (in a temporary working directory, with the process-wide plugin registry
restored afterwards). Blocks that are not meant to run use another fence language (```toml,
```bash, ```text). An example that fails names the document and the block's first line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
# Documents whose Python blocks are examples to run (the others quote code from elsewhere).
RUNNABLE = ("plugins.md", "metrics.md")

_FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text, with the line each starts on."""
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group("lang").strip() == "python":
            line = text.count("\n", 0, match.start("body")) + 1
            blocks.append((line, match.group("body")))
    return blocks


def test_the_fence_parser_finds_blocks_of_each_language() -> None:
    text = "intro\n```python\nx = 1\n```\n\n```toml\n[a]\n```\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = x + 1\n")]


@pytest.mark.parametrize("name", RUNNABLE)
def test_the_python_examples_of_a_document_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from castillo_core import get_plugins

    blocks = python_blocks((DOCS / name).read_text(encoding="utf-8"))
    assert blocks, f"docs/{name} has no python block"
    monkeypatch.chdir(tmp_path)
    plugins = get_plugins()
    before = set(plugins.records)
    leftovers: set[str] = set()
    namespace: dict[str, object] = {"__name__": f"docs_{Path(name).stem}"}
    try:
        for line, body in blocks:
            code = compile(body, f"docs/{name}:{line}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                first = body.strip().splitlines()[0]
                raise AssertionError(f"docs/{name}, the block at line {line} ({first!r}) failed: {exc!r}") from exc
    finally:
        leftovers = set(plugins.records) - before
        for leftover in leftovers:  # a failed example must not leak registrations into other tests
            plugins.unregister_plugin(leftover)
    assert not leftovers, f"docs/{name} left plugins registered: {sorted(leftovers)} (unregister them at the end)"


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : end if end != -1 else len(text)]


def test_the_plugin_guide_lists_the_whole_public_api_and_every_hook() -> None:
    import castillo_core
    from castillo_core.api import hookspecs

    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    table = _section(text, "## What a plugin may import")
    listed = {
        name
        for line in table.splitlines()
        if line.startswith("|") and line.count("|") >= 3
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", line.split("|")[2])
    }
    public = set(castillo_core.__all__)
    assert public - listed == set(), "public names missing from docs/plugins.md's import table"
    assert listed - public == set(), "docs/plugins.md lists names castillo_core does not export"
    hooks = {name for name in dir(hookspecs) if name.startswith("castillo_")}
    documented = set(re.findall(r"`(castillo_register_\w+)\(", _section(text, "## Hooks and registration")))
    assert hooks == documented, "docs/plugins.md's hook table and castillo_core/api/hookspecs.py differ"


def test_the_readme_demo_sample_is_what_castillo_show_prints(tmp_path: Path) -> None:
    """The README's `make demo` sample: its title, columns and legend are castillo show's own.

    The row's numbers come from the real demo (a 2-3 minute llama.cpp run, not repeated here);
    what must not drift is the layout a user compares their screen with.
    """
    from tests.helpers import castillo

    readme = (DOCS.parent / "README.md").read_text()
    block = next(m.group("body") for m in _FENCE.finditer(readme) if "castillo show runs/demo" in m.group("body"))
    sample = block.splitlines()
    title = next(i for i, line in enumerate(sample) if line.strip() == "castillo show runs/demo")
    header, rule, row, legend = sample[title + 1 : title + 5]
    castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--limit", "2", "-n", "2", "--out", "runs/demo", cwd=tmp_path
    )
    shown = castillo("show", "runs/demo", env={"COLUMNS": "200"}, cwd=tmp_path).stdout.splitlines()
    at = next(i for i, line in enumerate(shown) if line.strip() == "castillo show runs/demo")
    assert shown[at + 1].split() == header.split()
    assert set(shown[at + 2]) == set(rule) == {"─"}
    assert len(shown[at + 3].split()) == len(row.split()) == len(header.split())
    assert shown[at + 4] == legend
