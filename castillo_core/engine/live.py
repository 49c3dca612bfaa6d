"""The live progress display on a terminal: the running cell, a bar and its counts.

Counting (prompts, samples, tokens, tok/s, the ETA) is :class:`~castillo_core.engine.progress.Tally`'s;
this module only draws it, refreshed four times a second so the elapsed time ticks even
while no prompt finishes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from castillo_core.engine.progress import CellInfo, _Ticking


class RichProgress(_Ticking):
    """A live display on a terminal: the running cell, a bar, prompts, samples, tokens, tok/s, ETA.

    Two lines (the cell, then the bar and the counts), fitted to the terminal's width: the
    least important counts go first when it is narrow. A finished cell leaves one line.
    """

    def __init__(self, cells: Mapping[str, CellInfo] | None = None, console: Any = None) -> None:
        from rich.console import Console

        super().__init__(None, cells)
        self.console = console or Console(stderr=True)
        self._live: Any = None

    def _start_live(self) -> None:
        from rich.live import Live

        if self._live is None:
            self._live = Live(
                _LiveView(self),
                console=self.console,
                refresh_per_second=4,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=True,
            )
            self._live.start()

    def start_run(self, cells: int) -> None:
        super().start_run(cells)
        self._start_live()

    def start_cell(self, label: str, total: int, done: int) -> None:
        super().start_cell(label, total, done)
        self._start_live()

    def end_cell(self, label: str, status: str) -> None:
        super().end_cell(label, status)
        tally, _ = self.ended[-1]
        style = {"done": "green", "skipped": "dim", "failed": "red", "interrupted": "yellow"}.get(status, "")
        self.console.print(tally.ended(status), style=style, markup=False, highlight=False)

    def message(self, text: str, level: str = "info") -> None:
        style = {"warning": "yellow", "error": "bold red"}.get(level, "")
        self.console.print(text, style=style, markup=False, highlight=False)

    def close(self) -> None:
        super().close()
        if self._live is not None:
            self._live.stop()
            self._live = None


class _LiveView:
    """The live display's renderable: drawn afresh at each refresh, at the console's width."""

    def __init__(self, progress: RichProgress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        progress = self.progress
        tally = progress.tally
        if tally is None:
            return
        width = options.max_width
        where = f"[{progress.index}/{progress.cells}] " if progress.cells > 1 else ""
        yield Text(where + tally.label, style="bold", overflow="fold")
        parts = tally.parts()
        for drop in ("samples", "elapsed", "tokens", "rate", None):
            stats = "  ".join(parts.values())
            if len(stats) + 12 <= width or drop is None:
                break
            parts.pop(drop, None)
        bar_width = width - len(stats) - 2
        if bar_width < 10:
            yield Text(stats, overflow="fold")
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(width=bar_width, no_wrap=True)
        grid.add_column(no_wrap=True)
        waiting = tally.prompts <= 0 and tally.remaining > 0
        bar = ProgressBar(total=None if waiting else max(tally.total, 1), completed=tally.done, width=bar_width)
        grid.add_row(bar, Text(stats))
        yield grid
