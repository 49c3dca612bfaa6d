"""Entry point of ``castillo-report``: adds ``castillo report`` (matplotlib loads only when it runs)."""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl


@hookimpl
def castillo_register_commands(cli: Any) -> None:
    from castillo_report.command import command

    cli.add_command(command)
