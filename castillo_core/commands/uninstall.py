"""``castillo uninstall`` (defined beside ``install``)."""

from castillo_core.commands.install import uninstall as command

__all__ = ["command"]
