"""Plugin discovery and the registry (see :mod:`castillo_core.plugins.manager`)."""

from castillo_core.plugins.manager import PluginRecord, Plugins, Registered, get_plugins, plugin_names

__all__ = ["PluginRecord", "Plugins", "Registered", "get_plugins", "plugin_names"]
