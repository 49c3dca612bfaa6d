"""Progress reporting: a rich display for people, quiet or JSON lines for batch jobs."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Progress:
    """Quiet progress: the interface every display implements; it prints nothing."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, cells: int) -> None:
        """A run with this many cells begins."""

    def start_cell(self, label: str, total: int, done: int) -> None:
        """A cell begins: ``total`` prompts, ``done`` of them already stored."""

    def advance(self, prompts: int, tokens: int) -> None:
        """``prompts`` more prompts finished, with ``tokens`` generated tokens."""

    def end_cell(self, label: str, status: str) -> None:
        """A cell ended (``done``, ``interrupted``, ``failed``, ``skipped``)."""

    def message(self, text: str, level: str = "info") -> None:
        """Something the user should read."""

    def close(self) -> None:
        """The run is over."""


class JsonProgress(Progress):
    """One JSON object per line on stderr, for logs of batch jobs."""

    def __init__(self, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = 0.0
        self._cell = ""
        self._done = 0
        self._total = 0
        self._tokens = 0
        self._start = time.monotonic()

    def _emit(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        print(json.dumps(record, default=str), file=self.stream, flush=True)

    def start_run(self, cells: int) -> None:
        self._emit("run_start", cells=cells)

    def start_cell(self, label: str, total: int, done: int) -> None:
        self._cell, self._total, self._done, self._tokens = label, total, done, 0
        self._start = time.monotonic()
        self._emit("cell_start", cell=label, prompts=total, already_done=done)

    def advance(self, prompts: int, tokens: int) -> None:
        self._done += prompts
        self._tokens += tokens
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            elapsed = max(now - self._start, 1e-9)
            self._emit(
                "progress",
                cell=self._cell,
                done=self._done,
                total=self._total,
                tokens_per_s=round(self._tokens / elapsed, 1),
            )

    def end_cell(self, label: str, status: str) -> None:
        self._emit("cell_end", cell=label, status=status, done=self._done, total=self._total)

    def message(self, text: str, level: str = "info") -> None:
        self._emit("message", level=level, text=text)


class RichProgress(Progress):
    """A live display: cells, prompts done/total, tokens/s and ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self.console = Console(stderr=True)
        self._bar = RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._bar.start()
        self._cells_task: Any = None
        self._task: Any = None
        self._tokens = 0
        self._start = time.monotonic()

    def start_run(self, cells: int) -> None:
        self._cells_task = self._bar.add_task("cells", total=cells, rate="")

    def start_cell(self, label: str, total: int, done: int) -> None:
        self._tokens = 0
        self._start = time.monotonic()
        self._task = self._bar.add_task(label, total=total, completed=done, rate="")

    def advance(self, prompts: int, tokens: int) -> None:
        self._tokens += tokens
        elapsed = max(time.monotonic() - self._start, 1e-9)
        if self._task is not None:
            self._bar.update(self._task, advance=prompts, rate=f"{self._tokens / elapsed:,.0f} tok/s")

    def end_cell(self, label: str, status: str) -> None:
        if self._cells_task is not None:
            self._bar.update(self._cells_task, advance=1)
        if status != "done" and self._task is not None:
            self._bar.update(self._task, description=f"{label} ({status})")

    def message(self, text: str, level: str = "info") -> None:
        style = {"warning": "yellow", "error": "bold red"}.get(level, "")
        self.console.print(text, style=style, markup=False, highlight=False)

    def close(self) -> None:
        self._bar.stop()


class PlainProgress(Progress):
    """Messages only, no live display (quiet mode still shows warnings)."""

    def __init__(self, stream: TextIO | None = None, show_info: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.show_info = show_info

    def message(self, text: str, level: str = "info") -> None:
        if level != "info" or self.show_info:
            print(text, file=self.stream, flush=True)
