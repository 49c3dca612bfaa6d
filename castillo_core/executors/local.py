"""The local executor: each model opened once in this process, its cells run in plan order."""

from __future__ import annotations

from castillo_core.engine.engine import Engine
from castillo_core.engine.work import RunSummary


class LocalExecutor:
    """Runs every pending cell here; stops between prompts when the engine's stop flag is set."""

    name = "local"

    def execute(self, engine: Engine, summary: RunSummary) -> None:
        runner = engine.runner()
        for group in engine.groups():
            pending = engine.prepare(group, summary)
            if not pending:
                continue  # every cell of this model is stored: it is never opened
            opened = runner.open(pending[0].cell)
            try:
                for work in pending:
                    result = runner.run(opened, work, on_start=engine.cell_started, on_end=engine.record)
                    summary.cells.append(result)
                    if engine.stop:
                        return
            finally:
                opened.close()
