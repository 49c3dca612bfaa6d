"""Entry point of ``castillo-views``: adds ``castillo sanitize`` (the work imports lazily)."""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl


@hookimpl
def castillo_register_commands(cli: Any) -> None:
    from castillo_views.command import command

    cli.add_command(command)
