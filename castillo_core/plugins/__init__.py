"""Plugin discovery (:mod:`.manager`) and the registry of what plugins registered (:mod:`.registry`)."""

from castillo_core.plugins.manager import Plugins, get_plugins, plugin_names
from castillo_core.plugins.registry import PluginRecord, Registered, Registry

__all__ = ["PluginRecord", "Plugins", "Registered", "Registry", "get_plugins", "plugin_names"]
