"""Executors: where a run's pending cells are generated.

The engine checks the plan, records the run and then calls ``executor.execute(engine,
summary)``. The local executor (:mod:`castillo_core.executors.local`) generates in this
process; a cluster executor (the ``castillo-ray`` plugin) ships the same work to workers.
Both drive the engine through its public API only (see :mod:`castillo_core.engine.engine`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from castillo_core.engine.engine import Engine
    from castillo_core.engine.work import RunSummary


class Executor(Protocol):
    """Runs the pending cells of a prepared run and fills ``summary``.

    Called after the engine checked configs and wrote the run record. The executor keeps
    the manifest current through :meth:`Engine.cell_started` / :meth:`Engine.record`
    (workers only write parts; the driver is the manifest's only writer).
    """

    def execute(self, engine: Engine, summary: RunSummary) -> None: ...
