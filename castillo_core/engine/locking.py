"""One writer per output: an OS lock that dies with its process.

``castillo run`` (and every command that writes into an output: import, rescore,
sanitize's views, ``verify --repair``) holds an exclusive ``flock`` on ``OUT/.castillo.lock``
for as long as it writes. The kernel releases it when the process ends, however it ends, so a
SIGKILL never leaves a stale lock; a second writer is refused at once with one line naming
the holder. A cluster executor's workers write parts under their driver's lock and never take
it themselves.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from castillo_core.api.errors import StoreError

LOCK_FILE = ".castillo.lock"


class OutputLock:
    """An exclusive, non-blocking lock on an output directory (a context manager)."""

    def __init__(self, root: str | Path, what: str = "castillo") -> None:
        self.root = Path(root)
        self.what = what
        self._handle: IO[str] | None = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            return self
        path = self.root / LOCK_FILE
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot write into {self.root}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(path)
            handle.close()
            raise StoreError(
                f"another castillo process is writing into {self.root} ({holder}); wait for it to finish, "
                "or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        info = {"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.what}
        handle.write(json.dumps(info))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "held by another process"
    return f"pid {info.get('pid', '?')}, {info.get('command', 'castillo')}, since {info.get('since', '?')}"


def command_line() -> str:
    """This process's command, short, for the lock holder's description."""
    from castillo_core.api.redact import redact

    text = redact(" ".join(["castillo", *sys.argv[1:]]))
    return text if len(text) <= 120 else text[:117] + "..."
