"""The ``local`` executor: each model opened once in this process, its cells run in plan order.

A built-in plugin (registered like any other executor), so ``--executor`` has no special case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from castillo_core.api.contracts import Executor
from castillo_core.api.errors import ConfigError
from castillo_core.api.hookspecs import hookimpl

if TYPE_CHECKING:  # the engine loads pyarrow: not when castillo lists its plugins
    from castillo_core.engine.engine import Engine
    from castillo_core.engine.work import RunSummary


class LocalExecutor(Executor):
    """Runs every pending cell here; stops between prompts when the engine's stop flag is set."""

    name = "local"
    description = "generate in this process, one model at a time (the default)"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        if self.options:
            raise ConfigError(
                f"executor local takes no options (got {', '.join(sorted(self.options))}); "
                "they apply with a cluster executor, see `castillo list executors`"
            )

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


@hookimpl
def castillo_register_executors(register: Any) -> None:
    register(LocalExecutor)
