"""The units of work an executor runs, and what it reports back.

A :class:`PendingCell` is a cell with prompts left to generate (prepared by
:meth:`castillo_core.engine.engine.Engine.prepare`); a :class:`CellResult` is what running
(part of) one produced; a :class:`RunSummary` collects a run's results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from castillo_core.api.records import Prompt, Rejection
from castillo_core.engine.manifest import CellStatus
from castillo_core.engine.plan import Cell
from castillo_core.engine.prompts import PromptSet


@dataclass
class PendingCell:
    """A cell with prompts left to generate: its selection, those left, and how many are stored."""

    cell: Cell
    prompt_set: PromptSet
    remaining: list[Prompt]
    already: int


@dataclass
class CellResult:
    """What one cell (or one window of it, on a worker) did."""

    label: str
    config_hash: str
    status: CellStatus
    total: int = 0
    already_done: int = 0
    written: int = 0
    responses: int = 0
    tokens: int = 0
    seconds: float = 0.0
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    error: str | None = None
    provenance: dict[str, Any] | None = None  # for the manifest: what the backend resolved
    backend_report: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    """A run's cell results, and what failed and why (an executor's retries)."""

    out: str
    cells: list[CellResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status in {"done", "skipped"} for c in self.cells)
