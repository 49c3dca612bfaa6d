"""Progress reporting: a live display for people, plain lines for logs, JSON lines for batch jobs.

The engine calls ``start_run``, ``start_cell``, ``advance(prompts, tokens)`` once per finished
prompt, ``end_cell`` and ``message``; every count shown (prompts, samples, tokens, tok/s, ETA)
comes from those calls. The ETA is the remaining prompts at the pace of this run's finished
prompts, and there is none before the first one finishes. Displays: ``live.RichProgress`` (a
terminal), :class:`PlainProgress` (a log, or ``--quiet``), :class:`JsonProgress` (``--log-json``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class CellInfo:
    """What a display knows of a cell beyond the engine's calls: completions per prompt and the cap."""

    n: int | None = None
    max_new_tokens: int | None = None


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
        """Something the user should read: ``info``, ``notice`` (shown even when quiet), ``warning``, ``error``."""

    def close(self) -> None:
        """The run is over."""


def clock(seconds: float | None) -> str:
    """``h:mm:ss`` (``-`` for None)."""
    if seconds is None:
        return "-"
    seconds = max(round(seconds), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Tally:
    """One cell's counts in this run: prompts, samples, tokens, time, rate and ETA."""

    def __init__(self, label: str, total: int, already: int, info: CellInfo | None = None) -> None:
        self.label, self.total, self.already = label, total, already
        self.info = info or CellInfo()
        self.prompts = 0  # finished in this run
        self.tokens = 0
        self.start = time.monotonic()
        self.seconds: float | None = None  # set when the cell ends

    def add(self, prompts: int, tokens: int) -> None:
        self.prompts += prompts
        self.tokens += tokens

    def end(self) -> None:
        self.seconds = self.elapsed

    @property
    def elapsed(self) -> float:
        return self.seconds if self.seconds is not None else time.monotonic() - self.start

    @property
    def done(self) -> int:
        return (
            min(max(self.already + self.prompts, 0), max(self.total, 0)) if self.total else self.already + self.prompts
        )

    @property
    def remaining(self) -> int:
        return max(self.total - self.done, 0)

    @property
    def samples(self) -> int | None:
        return self.prompts * self.info.n if self.info.n else None

    @property
    def rate(self) -> float | None:
        """Generated tokens per second, once a prompt has finished."""
        return self.tokens / max(self.elapsed, 1e-9) if self.tokens > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace of this run's finished prompts; None before the first one."""
        if self.remaining == 0:
            return 0.0
        if self.prompts <= 0:
            return None
        return self.remaining * self.elapsed / self.prompts

    def parts(self) -> dict[str, str]:
        """The pieces of a progress line, in the order they are shown."""
        parts = {"prompts": f"{self.done:,}/{self.total:,} prompts"}
        if self.samples is not None:
            parts["samples"] = f"{self.samples:,} samples"
        parts["tokens"] = f"{self.tokens:,} tok"
        if self.rate is not None:
            parts["rate"] = f"{self.rate:,.0f} tok/s"
        parts["elapsed"] = clock(self.elapsed)
        parts["eta"] = f"ETA {clock(self.eta)}" if self.eta is not None else "ETA after the first prompt"
        return parts

    def line(self) -> str:
        """One plain progress line."""
        parts = self.parts()
        parts["elapsed"] += " elapsed"
        return f"{self.label}: " + ", ".join(parts.values())

    def ended(self, status: str) -> str:
        """The line that stays when the cell ends."""
        if status == "skipped":
            return f"{self.label}: skipped, {self.done:,}/{self.total:,} prompts already stored"
        if not self.total and not self.prompts:  # counted under another label (a cluster executor)
            return f"{self.label}: {status}"
        line = f"{self.label}: {status}, {self.done:,}/{self.total:,} prompts"
        if self.samples:
            line += f", {self.samples:,} samples"
        line += f", {self.tokens:,} tokens in {clock(self.elapsed)}"
        if self.rate is not None:
            line += f" ({self.rate:,.0f} tok/s)"
        return line

    def fields(self) -> dict[str, Any]:
        """The counts as JSON fields."""
        rate = self.rate
        return {
            "cell": self.label,
            "done": self.done,
            "total": self.total,
            "new_prompts": self.prompts,
            "samples": self.samples,
            "tokens": self.tokens,
            "seconds": round(self.elapsed, 3),
            "tokens_per_s": round(rate, 1) if rate is not None else None,
        }


class _Ticking(Progress):
    """A display that reports at most every ``every`` seconds, also while no prompt finishes."""

    def __init__(self, every: float | None, cells: Mapping[str, CellInfo] | None) -> None:
        self.every = every
        self.cells_info = dict(cells or {})
        self.tally: Tally | None = None
        self.cells = 0
        self.index = 0
        self.ended: list[tuple[Tally, str]] = []
        self._lock = threading.RLock()
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start_ticker(self) -> None:
        if self.every is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._tick, name="castillo-progress", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        assert self.every is not None
        while not self._stop.wait(min(self.every, 1.0)):
            self._maybe_report()

    def _maybe_report(self) -> None:
        with self._lock:
            if self.every is None or self.tally is None or self.tally.seconds is not None:
                return
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self.report(self.tally)

    def report(self, tally: Tally) -> None:
        """Print the running cell's progress."""

    def start_run(self, cells: int) -> None:
        self.cells = cells

    def start_cell(self, label: str, total: int, done: int) -> None:
        with self._lock:
            self.index += 1
            self.tally = Tally(label, total, done, self.cells_info.get(label))
            self._last = time.monotonic()
        self._start_ticker()

    def advance(self, prompts: int, tokens: int) -> None:
        with self._lock:
            if self.tally is not None:
                self.tally.add(prompts, tokens)
        self._maybe_report()

    def end_cell(self, label: str, status: str) -> None:
        with self._lock:
            if self.tally is not None and self.tally.label == label:
                tally, self.tally = self.tally, None
            else:  # an executor that reports several cells under one label (Ray) ends them one by one
                tally = Tally(label, 0, 0)
            tally.end()
            self.ended.append((tally, status))

    def tallies(self) -> list[Tally]:
        """Every cell's counts so far: the ended ones and the running one."""
        return [t for t, _ in self.ended] + ([self.tally] if self.tally is not None else [])

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class JsonProgress(_Ticking):
    """JSON lines on stderr and nothing else: ``run_start``, ``cell_start``, ``progress`` (every
    ``every`` seconds), ``cell_end`` (with tokens, seconds and tokens/s), ``message``, ``log``,
    ``error`` and ``run_end``.
    """

    def __init__(
        self, stream: TextIO | None = None, every: float = 10.0, cells: Mapping[str, CellInfo] | None = None
    ) -> None:
        super().__init__(every, cells)
        self.stream = stream or sys.stderr
        self._run_start = time.monotonic()
        self._ended_run = False

    def _emit(self, event: str, **fields: Any) -> None:
        from castillo_core.api.redact import redact

        if isinstance(fields.get("text"), str):  # messages, logs and errors, as the plain CLI prints errors
            fields["text"] = redact(fields["text"])
        record = {"time": round(time.time(), 3), "event": event, **fields}
        with self._lock:
            print(json.dumps(record, default=str), file=self.stream, flush=True)

    def start_run(self, cells: int) -> None:
        super().start_run(cells)
        self._run_start = time.monotonic()
        self._emit("run_start", cells=cells)

    def start_cell(self, label: str, total: int, done: int) -> None:
        super().start_cell(label, total, done)
        info = self.cells_info.get(label, CellInfo())
        self._emit(
            "cell_start", cell=label, prompts=total, already_done=done, n=info.n, max_new_tokens=info.max_new_tokens
        )

    def report(self, tally: Tally) -> None:
        eta = tally.eta
        self._emit("progress", **tally.fields(), eta_s=round(eta, 1) if eta is not None else None)

    def end_cell(self, label: str, status: str) -> None:
        super().end_cell(label, status)
        tally, _ = self.ended[-1]
        self._emit("cell_end", status=status, **tally.fields())

    def message(self, text: str, level: str = "info") -> None:
        self._emit("message", level=level, text=text)

    def error(self, text: str, exit_code: int) -> None:
        """A user error that ends the command (``castillo`` exits with ``exit_code``)."""
        self._emit("error", text=text, exit_code=exit_code)

    def __exit__(self, *exc_info: object) -> None:
        from castillo_core.api.errors import Interrupted

        exc = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(exc, KeyboardInterrupt | Interrupted):
            status = "interrupted"
        elif exc is not None:
            status = "failed"
        elif any(s not in {"done", "skipped"} for _, s in self.ended):
            status = "incomplete"
        else:
            status = "done"
        self.close(status)

    def close(self, status: str = "done") -> None:
        super().close()
        if self._ended_run:
            return
        self._ended_run = True
        statuses: dict[str, int] = {}
        for _, s in self.ended:
            statuses[s] = statuses.get(s, 0) + 1
        tallies = self.tallies()
        tokens = sum(t.tokens for t in tallies)
        seconds = time.monotonic() - self._run_start
        samples = [t.samples for t in tallies]
        self._emit(
            "run_end",
            status=status,
            cells=self.cells,
            cell_statuses=statuses,
            new_prompts=sum(t.prompts for t in tallies),
            samples=sum(s for s in samples if s is not None) if any(s is not None for s in samples) else None,
            tokens=tokens,
            seconds=round(seconds, 3),
            tokens_per_s=round(tokens / seconds, 1) if tokens and seconds > 0 else None,
        )


class _JsonLogHandler(logging.Handler):
    def __init__(self, progress: JsonProgress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.progress._emit("log", level=record.levelname.lower(), logger=record.name, text=text)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@contextmanager
def json_logging(progress: JsonProgress) -> Iterator[None]:
    """Log records (and Python warnings) as ``log`` events of ``progress`` instead of plain stderr lines."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_JsonLogHandler(progress)]
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers = saved


class PlainProgress(_Ticking):
    """Plain lines on stderr: for a stderr that is not a terminal (``every`` seconds), or warnings only.

    With ``every=None`` (``--quiet``) only messages print: warnings, errors and notices,
    and info messages too when ``show_info``. Otherwise each cell's start and end print a
    line, and a progress line prints every ``every`` seconds while a cell runs (also while
    no prompt finishes, so a log shows the run is alive).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        show_info: bool = False,
        every: float | None = None,
        cells: Mapping[str, CellInfo] | None = None,
    ) -> None:
        super().__init__(every, cells)
        self.stream = stream or sys.stderr
        self.show_info = show_info

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def start_cell(self, label: str, total: int, done: int) -> None:
        super().start_cell(label, total, done)
        if self.every is not None:
            where = f"[{self.index}/{self.cells}] " if self.cells > 1 else ""
            self._print(f"{where}{label}: {total:,} prompts, {done:,} already stored")

    def report(self, tally: Tally) -> None:
        self._print(tally.line())

    def end_cell(self, label: str, status: str) -> None:
        super().end_cell(label, status)
        if self.every is not None:
            tally, _ = self.ended[-1]
            self._print(tally.ended(status))

    def message(self, text: str, level: str = "info") -> None:
        if level != "info" or self.show_info:
            self._print(text)
