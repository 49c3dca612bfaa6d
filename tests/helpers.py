"""Test helpers: run the real `castillo` command, fake installed distributions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _shared_v1() -> Path:
    """CASTILLO v1 reference data: $CASTILLO_SHARED_DATA, ../shared beside the checkout, or /work/shared."""
    candidates = [Path(os.environ["CASTILLO_SHARED_DATA"])] if os.environ.get("CASTILLO_SHARED_DATA") else []
    candidates += [REPO.parent / "shared" / "data" / "castillo-v1", Path("/work/shared/data/castillo-v1")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_V1 = _shared_v1()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def castillo(
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
        raise AssertionError(f"castillo {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_distribution(root: Path, dist: str, entry_point: str, module: str, source: str) -> Path:
    """Write a module plus a ``.dist-info`` declaring a castillo entry point under ``root``.

    With ``root`` on PYTHONPATH, importlib.metadata discovers it exactly like a
    pip-installed package, without installing anything.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(f"[castillo]\n{entry_point} = {module}\n")
    return root
