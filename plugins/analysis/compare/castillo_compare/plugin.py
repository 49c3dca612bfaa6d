"""Entry point of ``castillo-compare``: adds ``castillo compare`` (numpy and pyarrow load only when it runs)."""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl


@hookimpl
def castillo_register_commands(cli: Any) -> None:
    from castillo_compare.command import command

    cli.add_command(command)
