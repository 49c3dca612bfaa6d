"""``castillo install`` / ``castillo uninstall``: pip in castillo's own interpreter.

Running pip through ``sys.executable`` installs into the environment castillo runs in,
which is what users want under pipx or a venv they did not activate. After installing,
the command lists what the new packages registered.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click


def _plugins_snapshot() -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "castillo_core.cli", "plugins", "--json"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {}
    return {p["name"]: p for p in json.loads(proc.stdout)}


def _pip(args: list[str]) -> None:
    from castillo_core.api.errors import CastilloError

    proc = subprocess.run([sys.executable, "-m", "pip", *args])
    if proc.returncode != 0:
        raise CastilloError(f"pip {' '.join(args)} failed with exit code {proc.returncode}")


@click.command("install")
@click.argument("packages", nargs=-1, required=True)
@click.option("-e", "--editable", is_flag=True, help="Install local paths in editable mode.")
@click.option("--upgrade", is_flag=True, help="Upgrade packages already installed.")
def install(packages: tuple[str, ...], editable: bool, upgrade: bool) -> None:
    """Install plugin packages into castillo's environment, then list what they registered."""
    before = _plugins_snapshot()
    args = ["install"] + (["--upgrade"] if upgrade else [])
    for package in packages:
        args += ["-e", package] if editable else [package]
    _pip(args)
    after = _plugins_snapshot()
    changed = [p for name, p in after.items() if before.get(name) != p]
    if not changed:
        click.echo("installed; no new castillo plugin was registered")
    for p in changed:
        what = ", ".join(p["provides"]) or p.get("error") or "-"
        click.echo(f"plugin {p['name']} ({p['distribution']} {p['version']}, {p['status']}): {what}")


@click.command("uninstall")
@click.argument("packages", nargs=-1, required=True)
def uninstall(packages: tuple[str, ...]) -> None:
    """Uninstall plugin packages from castillo's environment."""
    before = _plugins_snapshot()
    _pip(["uninstall", "-y", *packages])
    after = _plugins_snapshot()
    for name in sorted(set(before) - set(after)):
        click.echo(f"removed plugin {name}: {', '.join(before[name]['provides']) or '-'}")
