"""Entry point of ``castillo-formats``: adds ``castillo import`` and ``castillo export``."""

from __future__ import annotations

from typing import Any

from castillo_core import hookimpl


@hookimpl
def castillo_register_commands(cli: Any) -> None:
    from castillo_formats.export_command import command as export
    from castillo_formats.import_command import command as import_

    cli.add_command(import_)
    cli.add_command(export)
