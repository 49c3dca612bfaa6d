"""The worker side of the Ray executor: what runs inside a Ray task, and the hub actor.

Kept apart from the driver (:mod:`castillo_ray.executor`) because this is the code
that travels: Ray imports this module in every worker process, by name, so it must not
import Ray at module level either (the driver's ``castillo run`` imports it without Ray).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from castillo_core import Progress, Prompt, StoreError

if TYPE_CHECKING:
    from castillo_core import Cell, CellResult, RunnerSettings


class Hub:
    """An actor between workers and the driver: progress events in, the stop flag out."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.stopping = False

    def report(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)

    def drain(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events

    def stop(self) -> None:
        self.stopping = True

    def should_stop(self) -> bool:
        return self.stopping


class RemoteProgress(Progress):
    """A worker's progress: advances batched to the hub twice a second, messages at once."""

    def __init__(self, hub: Any, key: str, attempt: int, every: float = 0.5) -> None:
        self.hub, self.key, self.attempt, self.every = hub, key, attempt, every
        self._prompts = 0
        self._tokens = 0
        self._last = time.monotonic()

    def advance(self, prompts: int, tokens: int) -> None:
        self._prompts += prompts
        self._tokens += tokens
        if time.monotonic() - self._last >= self.every:
            self.flush()

    def end_cell(self, label: str, status: str) -> None:
        self.flush()

    def message(self, text: str, level: str = "info") -> None:
        self.hub.report.remote(("message", self.key, self.attempt, text, level))

    def flush(self) -> None:
        if self._prompts or self._tokens:
            self.hub.report.remote(("advance", self.key, self.attempt, self._prompts, self._tokens))
        self._prompts, self._tokens = 0, 0
        self._last = time.monotonic()


class RemoteStop:
    """The driver's stop flag seen from a worker, asked of the hub at most once a second."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self._value = False
        self._last = time.monotonic()  # first ask after a second: the hub actor may still be starting

    def __bool__(self) -> bool:
        if not self._value and time.monotonic() - self._last >= 1.0:
            import ray

            self._last = time.monotonic()
            self._value = bool(ray.get(self.hub.should_stop.remote()))
        return self._value


@dataclass
class TaskPayload:
    """Everything a worker needs, built by the driver (cells and metrics as it resolved them)."""

    key: str
    out: str
    cells: list[Cell]
    settings: RunnerSettings
    items: list[tuple[int, list[Prompt], int]]  # (index into cells, window prompts, stored at planning)
    cwd: str


@dataclass
class TaskOutcome:
    """What a finished task reports back: per item its result (with provenance and backend report)."""

    key: str
    results: list[tuple[int, CellResult]]
    started_at: float  # wall clock, to line tasks up per worker
    seconds: float
    pid: int
    node: str


def run_task(payload: TaskPayload, hub: Any, attempt: int) -> TaskOutcome:
    """Run one task in a Ray worker: open the model once, run each window's unstored prompts."""
    from castillo_core import CellRunner, OpenedModel, PendingCell, PromptSet, Store

    started_at, started = time.time(), time.monotonic()
    if os.path.isdir(payload.cwd):
        os.chdir(payload.cwd)  # relative model and corpus paths mean what they meant to the driver
    out = Path(payload.out)
    if not (out / "manifest.json").exists():
        raise StoreError(
            f"output {out} is not visible on node {os.uname().nodename}: put --out on storage every Ray node "
            "mounts at the same path (see docs/distributed.md)"
        )
    progress = RemoteProgress(hub, payload.key, attempt)
    store = Store(out)  # never opened: a scan would quarantine another worker's half-renamed part
    runner = CellRunner(store, payload.settings, progress, RemoteStop(hub))
    results: list[tuple[int, CellResult]] = []
    opened: OpenedModel | None = None
    try:
        for index, window, stored_at_plan in payload.items:
            if runner.stop:
                break
            cell = payload.cells[index]
            done = store.finished(cell.model, cell.dataset).get(cell.config_hash, set())
            remaining = [p for p in window if p.prompt_id not in done]
            already = len(window) - len(remaining)
            if already > stored_at_plan:  # written by an earlier attempt: the display counts them again
                progress.advance(already - stored_at_plan, 0)
            if not remaining:
                continue
            if opened is None:
                opened = runner.open(cell)
            result = runner.run(opened, PendingCell(cell, PromptSet(window), remaining, already))
            results.append((index, result))
    finally:
        progress.flush()
        if opened is not None:
            opened.close()
    seconds = time.monotonic() - started
    return TaskOutcome(payload.key, results, started_at, seconds, os.getpid(), os.uname().nodename)
