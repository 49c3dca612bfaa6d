"""Test helpers: run the real `castillo` command, fake installed distributions.

``castillo(...)`` runs the command in this process (click's ``CliRunner`` streams,
``castillo_core.cli.main``), which is what almost every test wants: it is ten times
faster than a fresh interpreter. ``castillo_process(...)`` runs ``python -m
castillo_core.cli`` in a subprocess, for the few tests about process behaviour (real
signals, import-time laziness, a library blocked by a PYTHONPATH shim, discovery of an
installed distribution by a fresh interpreter). Both return a
``subprocess.CompletedProcess`` with ``returncode``, ``stdout`` and ``stderr``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "docs" / "examples" / "castillo-example-plugin"


def _shared_v1() -> Path:
    """CASTILLO v1 reference data: $CASTILLO_SHARED_DATA, ../shared beside the checkout, or /work/shared."""
    candidates = [Path(os.environ["CASTILLO_SHARED_DATA"])] if os.environ.get("CASTILLO_SHARED_DATA") else []
    candidates += [REPO.parent / "shared" / "data" / "castillo-v1", Path("/work/shared/data/castillo-v1")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_V1 = _shared_v1()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Environment variables that change which plugins a fresh `castillo` process discovers.
_PLUGIN_ENV = (
    "CASTILLO_LOAD_PLUGINS",
    "CASTILLO_DISABLE_PLUGINS",
    "CASTILLO_STRICT_PLUGINS",
    "CASTILLO_TRACE_PLUGINS",
    "PYTHONPATH",
)


def _failed(args: tuple[str, ...], proc: subprocess.CompletedProcess[str]) -> AssertionError:
    return AssertionError(f"castillo {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def castillo_process(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `castillo` command in a subprocess and return what it printed."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    proc = subprocess.run(
        [sys.executable, "-m", "castillo_core.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise _failed(args, proc)
    return proc


def castillo(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `castillo` command in this process, as ``python -m castillo_core.cli`` would.

    What a fresh process would see is set up for the call and put back afterwards: the
    environment (``env`` on top of ours, COLUMNS=200 by default), ``sys.argv``, the working
    directory, PYTHONPATH entries (on ``sys.path``; modules imported from them are
    forgotten afterwards), the root logger (the CLI's ``logging.basicConfig`` writes to the
    captured stderr), the click group's commands (core and plugin commands are added by
    ``main`` on every call) and, when ``env`` sets a variable that changes plugin discovery,
    the process-wide plugin registry (rediscovered for the call). An uncaught exception
    prints its traceback to stderr and exits 1, like the interpreter.

    One thing a process can do that this cannot: a PYTHONPATH entry that shadows a module
    this process has already imported (a shim blocking matplotlib, say) only takes effect in
    a fresh interpreter, so such a call runs through :func:`castillo_process` instead.
    ``timeout`` only applies to a subprocess.
    """
    import click.formatting
    from click.testing import CliRunner

    from castillo_core import cli as cli_module
    from castillo_core.plugins import manager

    overrides = dict(env or {})
    overrides.setdefault("COLUMNS", os.environ.get("COLUMNS", "200"))
    roots = [p for p in overrides.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _shadows_a_loaded_module(roots):
        return castillo_process(*args, env=env, check=check, timeout=timeout, cwd=cwd)
    rediscover = any(name in overrides for name in _PLUGIN_ENV)

    saved_plugins = manager._PLUGINS
    saved_commands = dict(cli_module.cli.commands)
    saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
    saved_modules = set(sys.modules)
    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level

    returncode = 0
    with CliRunner().isolation(env=overrides) as (out, err, _):
        try:
            root_logger.handlers = []  # as in a fresh process: the CLI's basicConfig takes effect
            click.formatting.FORCED_WIDTH = None  # help as wide as COLUMNS says, not CliRunner's 80
            sys.argv = [str(Path(cli_module.__file__).with_name("__main__.py")), *args]
            if roots:
                sys.path[0:0] = roots
                importlib.invalidate_caches()
            if cwd is not None:
                os.chdir(cwd)
            if rediscover:
                manager.get_plugins(refresh=True)
            cli_module.main(list(args))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                returncode = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                returncode = 1
        except KeyboardInterrupt:
            traceback.print_exc()
            returncode = -signal.SIGINT
        except Exception:
            traceback.print_exc()
            returncode = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            stdout = out.getvalue().decode("utf-8", "replace")
            stderr = err.getvalue().decode("utf-8", "replace")
            root_logger.handlers = saved_handlers
            root_logger.setLevel(saved_level)
            sys.argv = saved_argv
            os.chdir(saved_cwd)
            cli_module.cli.commands.clear()
            cli_module.cli.commands.update(saved_commands)
            if rediscover:
                manager._PLUGINS = saved_plugins
            if roots:
                sys.path[:] = saved_path
                _forget_modules_under(roots, saved_modules)
                importlib.invalidate_caches()

    proc = subprocess.CompletedProcess(["castillo", *args], returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise _failed(args, proc)
    return proc


def _shadows_a_loaded_module(roots: list[str]) -> bool:
    """Whether a top-level module under ``roots`` is already imported here from somewhere else."""
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            name = entry.stem if entry.suffix == ".py" else entry.name
            if not name.isidentifier() or (entry.is_file() and entry.suffix != ".py"):
                continue
            loaded = sys.modules.get(name)
            where = getattr(loaded, "__file__", None) or next(iter(getattr(loaded, "__path__", [])), None)
            if loaded is not None and not (where and Path(where).resolve().is_relative_to(entry.resolve())):
                return True
    return False


def _forget_modules_under(roots: list[str], keep: set[str]) -> None:
    """Drop modules a call imported from ``roots``, so the next test's same-named module is its own."""
    prefixes = tuple(str(Path(r).resolve()) + os.sep for r in roots)
    for name in set(sys.modules) - keep:
        where = getattr(sys.modules.get(name), "__file__", None)
        if where and str(Path(where).resolve()).startswith(prefixes):
            del sys.modules[name]


def make_distribution(root: Path, dist: str, entry_point: str, module: str, source: str) -> Path:
    """Write a module plus a ``.dist-info`` declaring a castillo entry point under ``root``.

    With ``root`` on PYTHONPATH, importlib.metadata discovers it exactly like a
    pip-installed package, without installing anything.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    _write_dist_info(root, dist, "0.3.0", f"{entry_point} = {module}")
    return root


def _write_dist_info(root: Path, dist: str, version: str, entry_points: str) -> None:
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[castillo]\n{entry_points}\n")


def example_plugin_env(root: Path) -> dict[str, str]:
    """docs/examples/castillo-example-plugin as an installed distribution, without installing it.

    Writes the distribution's ``.dist-info`` (name, version and castillo entry point from
    its pyproject.toml) under ``root`` and returns the environment that puts it and the
    example's package directory on PYTHONPATH: castillo then discovers the example through
    its entry point, as it would after ``pip install``, whether or not it is installed here.
    """
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["castillo"]
    _write_dist_info(
        root,
        project["name"],
        str(project.get("version") or "0"),
        "\n".join(f"{name} = {target}" for name, target in entry_points.items()),
    )
    return {"PYTHONPATH": os.pathsep.join([str(root), str(EXAMPLE_PLUGIN)])}
