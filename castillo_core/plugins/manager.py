"""Plugin discovery and the registry of backends, corpora and metrics.

Entry points of the ``castillo`` group are loaded one at a time: a plugin that raises
on import or registration is recorded (name, distribution, version, error) and every
other plugin keeps working. pluggy's own ``load_setuptools_entrypoints`` stops at the
first broken plugin, which is why we do not use it.

Hooks are called through pluggy, one plugin at a time (``pm.subset_hook_caller``): a
plugin's ``register`` callback then knows whose classes it receives, and one plugin
raising never keeps another's hooks from running. After each registration pluggy's
``check_pending`` runs, so a misspelled hook (``castillo_register_backend``) is that
plugin's failure, with a "did you mean". Like pytest with ``pytest_``, a function named
``castillo_*`` counts as a hook implementation even without ``@hookimpl``.

Environment variables:
- ``CASTILLO_LOAD_PLUGINS=a,b``: load only these entry points (set and empty: none).
- ``CASTILLO_DISABLE_PLUGINS=a,b``: never load these.
- ``CASTILLO_STRICT_PLUGINS=1``: re-raise plugin errors (for plugin authors).
- ``CASTILLO_TRACE_PLUGINS=1``: print every hook call to stderr (pluggy's hook-call monitoring).
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import pluggy

from castillo_core.api import hookspecs
from castillo_core.api.errors import PluginError
from castillo_core.plugins.registry import PluginRecord, Registrar, Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "castillo"
_KIND_HOOKS = {
    "backend": "castillo_register_backends",
    "corpus": "castillo_register_corpora",
    "metric": "castillo_register_metrics",
    "preset": "castillo_register_presets",
    "predictor": "castillo_register_predictors",
    "executor": "castillo_register_executors",
    "view": "castillo_register_views",
}
_BUILTINS = ("castillo_core.executors.local", "castillo_core.testing")


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, taking every ``castillo_*`` function as a hook implementation.

    Without this, a misspelled hook without ``@hookimpl`` would be silently ignored;
    with it, ``check_pending`` reports the misspelling.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(f"{ENTRY_POINT_GROUP}_") and inspect.isroutine(getattr(plugin, name, None)):
            return {}
        return opts


def _trace_before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    for impl in impls:
        print(f"castillo: hook {hook_name} -> plugin {impl.plugin_name}", file=sys.stderr)


def _trace_after(outcome: Any, hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
    if outcome.exception is not None:
        print(f"castillo: hook {hook_name} raised {type(outcome.exception).__name__}", file=sys.stderr)


class Plugins(Registry):
    """The loaded plugins and everything they registered."""

    def __init__(self) -> None:
        self.pm = _PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        super().__init__(list(_KIND_HOOKS))
        self.strict = _truthy("CASTILLO_STRICT_PLUGINS")
        self.trace = _truthy("CASTILLO_TRACE_PLUGINS")
        if self.trace:
            self.pm.add_hookcall_monitoring(_trace_before, _trace_after)

    # -- discovery -----------------------------------------------------------------

    def load_builtins(self) -> None:
        for module_name in _BUILTINS:
            module = __import__(module_name, fromlist=["_"])
            record = PluginRecord(module_name, "castillo", _castillo_version(), module_name, status="builtin")
            self._add_plugin(module, record)

    def load_entry_points(self) -> None:
        allow = _env_list("CASTILLO_LOAD_PLUGINS")
        block = set(_env_list("CASTILLO_DISABLE_PLUGINS") or [])
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist is not None else "?",
                version=dist.version if dist is not None else "?",
                module=ep.value,
            )
            if ep.name in self.records:
                continue
            if (allow is not None and ep.name not in allow) or ep.name in block:
                record.status = "disabled"
                self.records[ep.name] = record
                continue
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken plugin (even sys.exit) must not kill the host
                self._fail(record, exc, "import")
                self.records[ep.name] = record
                continue
            self._add_plugin(module, record)

    def register_plugin(self, plugin: ModuleType | object, name: str, distribution: str = "local") -> PluginRecord:
        """Register an in-process plugin object (tests, notebooks) and run its hooks.

        A plugin object that is registered already (an installed plugin's module) is not
        registered twice: its existing record is returned.
        """
        if self.pm.is_registered(plugin):
            existing = self.pm.get_name(plugin)
            if existing in self.records:
                return self.records[existing]
        if name in self.records:
            taken = self.records[name]
            raise PluginError(
                f"a plugin named {name!r} is registered already ({taken.distribution} {taken.version}); "
                "register yours under another name"
            )
        record = PluginRecord(name, distribution, "0", getattr(plugin, "__name__", type(plugin).__name__))
        self._add_plugin(plugin, record)
        return record

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and everything it registered."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self._drop_entries(name)
        self.records.pop(name, None)

    def _add_plugin(self, plugin: object, record: PluginRecord) -> None:
        self.records[record.name] = record
        try:
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.get_plugin(record.name) is not None:
                self.pm.unregister(name=record.name)
            self._fail(record, PluginError(self._explain(exc)), "register")
            return
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken plugin must not kill the host
            self._fail(record, exc, "register")
            return
        failed = False
        for kind, hook_name in _KIND_HOOKS.items():
            try:
                self._call(record.name, hook_name, register=Registrar(self, kind, record))
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's other hooks keep their registrations
                self._drop_entries(record.name, kind)
                self._fail(record, exc, f"{hook_name}()")
                failed = True
        if failed and record.provides:
            record.status = "partial"

    @staticmethod
    def _explain(exc: pluggy.PluginValidationError) -> str:
        """pluggy's complaint, with the hook the author probably meant."""
        message = str(exc)
        hooks = [name for name in dir(hookspecs) if name.startswith(f"{ENTRY_POINT_GROUP}_")]
        if "can not be found in the hookspec" in message or "hookimpl definition" in message:
            hook = next((h for h in hooks if h in message), "the hook")
            expected = "cli" if hook == "castillo_register_commands" else "register"
            return f"{hook} takes one argument named {expected!r} ({message})"
        for word in message.replace("'", " ").replace(":", " ").replace("(", " ").split():
            if word.startswith(f"{ENTRY_POINT_GROUP}_") and word not in hooks:
                close = difflib.get_close_matches(word, hooks, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f"; castillo's hooks are {', '.join(hooks)}"
                return f"unknown hook {word!r}{hint} ({message})"
        return message

    def _call(self, plugin_name: str, hook_name: str, **kwargs: Any) -> Any:
        """Call one hook of one plugin through pluggy (other plugins' implementations left out)."""
        plugin = self.pm.get_plugin(plugin_name)
        if plugin is None or not any(i.plugin_name == plugin_name for i in self._hook(hook_name).get_hookimpls()):
            return None
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)

    def _hook(self, hook_name: str) -> pluggy.HookCaller:
        hook: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        return hook

    def _fail(self, record: PluginRecord, exc: BaseException, stage: str) -> None:
        record.status = "failed"
        record.error = f"{stage}: {type(exc).__name__}: {exc}"
        log.warning("plugin %s (%s %s) failed at %s", record.name, record.distribution, record.version, record.error)
        if self.strict:
            raise PluginError(
                f"plugin {record.name} ({record.distribution} {record.version}) failed at {record.error}"
            ) from exc
        log.debug("%s", "".join(traceback.format_exception(exc)))

    def register_commands(self, cli: Any) -> None:
        """Let each plugin add its CLI commands; a failing plugin is recorded, not fatal."""
        for record in list(self.records.values()):
            if record.status not in {"loaded", "builtin", "partial"}:
                continue
            before = set(getattr(cli, "commands", {}))
            try:
                self._call(record.name, "castillo_register_commands", cli=cli)
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                self._fail(record, exc, "castillo_register_commands()")
                continue
            added = sorted(set(getattr(cli, "commands", {})) - before)
            record.provides.extend(f"command:{name}" for name in added if f"command:{name}" not in record.provides)


def _castillo_version() -> str:
    from castillo_core import __version__

    return __version__


_PLUGINS: Plugins | None = None


def get_plugins(refresh: bool = False) -> Plugins:
    """The process-wide plugins, discovered on first use."""
    global _PLUGINS
    if _PLUGINS is None or refresh:
        plugins = Plugins()
        plugins.load_builtins()
        plugins.load_entry_points()
        _PLUGINS = plugins
    return _PLUGINS


def plugin_names(kind: str) -> Iterable[str]:
    return [e.name for e in get_plugins().entries(kind)]
