"""Stopping cleanly: the first Ctrl-C flushes finished prompts, a second one aborts."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopFlag:
    """Set by SIGINT; the engine checks it between results and flushes before stopping."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextmanager
def sigint_flushes(flag: StopFlag) -> Iterator[None]:
    """First SIGINT asks the engine to flush and stop; a second one interrupts at once."""
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread: nothing to install
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.requested = True
        print(
            "\ncastillo: interrupt received, flushing finished prompts (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
