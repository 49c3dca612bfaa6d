"""The ``castillo_plugin`` pytest fixture, for plugin authors' tests.

Installed as a pytest plugin through the ``pytest11`` entry point, so any test in an
environment with castillo can register a plugin for one test and have it removed
afterwards, even when the test fails::

    def test_my_metric(castillo_plugin):
        plugins = castillo_plugin(MyPluginModule, name="my-plugin")
        assert "my-metric" in [m.name for m in plugins.entries("metric")]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from castillo_core.api.errors import PluginError
from castillo_core.plugins import Plugins, get_plugins


@pytest.fixture
def castillo_plugin() -> Iterator[Callable[..., Plugins]]:
    """Register plugin objects (modules or classes with hookimpls) for one test."""
    plugins = get_plugins()
    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> Plugins:
        plugin_name: str = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        installed = plugins.pm.is_registered(plugin)  # an installed plugin's module: used, never removed
        try:
            record = plugins.register_plugin(plugin, plugin_name)
        except PluginError as exc:  # the name is taken: nothing of the other plugin is touched
            raise AssertionError(str(exc)) from None
        if not installed:
            names.append(record.name)
        if record.status == "failed":
            raise AssertionError(f"plugin {plugin_name} failed to register: {record.error}")
        return plugins

    try:
        yield register
    finally:
        for name in names:
            plugins.unregister_plugin(name)
