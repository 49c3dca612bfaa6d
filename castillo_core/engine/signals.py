"""Stopping cleanly: the first Ctrl-C (SIGINT) or SIGTERM flushes finished prompts, a second one aborts.

SIGTERM is what Slurm, Kubernetes and systemd send on preemption: it is treated like the
first Ctrl-C, so a preempted run stores what it finished and is marked interrupted.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopFlag:
    """Set by SIGINT or SIGTERM; the engine checks it between results and flushes before stopping."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.requested

    @property
    def exit_code(self) -> int:
        """The shell's convention for the signal that stopped the run (130 for SIGINT, 143 for SIGTERM)."""
        return _EXIT_CODES.get(signal.Signals(self.signal), 130) if self.signal is not None else 130


@contextmanager
def sigint_flushes(flag: StopFlag) -> Iterator[None]:
    """First SIGINT/SIGTERM asks the engine to flush and stop; a second one interrupts at once."""
    installed: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            for sig, previous in installed.items():
                signal.signal(sig, previous)
            raise KeyboardInterrupt
        flag.requested, flag.signal = True, signum
        name = "interrupt" if signum == signal.SIGINT else "SIGTERM"
        print(f"\ncastillo: {name} received, flushing finished prompts (again to abort)", file=sys.stderr, flush=True)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            installed[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
    except ValueError:  # not the main thread: nothing to install
        pass
    try:
        yield
    finally:
        for number, before in installed.items():
            try:
                signal.signal(number, before)
            except ValueError:
                pass
