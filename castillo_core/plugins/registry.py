"""The registry: every registered class by kind and name, with aliases, qualified names and clashes.

Two plugins may register the same name: both stay, each reachable as ``distribution:name``
(or ``plugin:name``), and the bare name becomes ambiguous for both (load order never picks a
winner); both plugins report the clash. Lookups are case-insensitive and say "did you mean".
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any

from castillo_core.api.contracts import CONTRACTS, Backend, Corpus, Executor, Predictor, Preset
from castillo_core.api.errors import PluginError, UnknownNameError
from castillo_core.api.metric import Metric


@dataclass
class PluginRecord:
    """One plugin as discovered: where it came from, whether it loaded, what it provides."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"  # loaded | partial (a hook failed, others registered) | failed | disabled | builtin
    error: str | None = None
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # names another plugin registers too

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Registered:
    """A registered class, the plugin that registered it and the names it answers to."""

    kind: str
    name: str
    cls: Any  # the registered class (a Preset instance for presets)
    plugin: str
    distribution: str
    aliases: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        missing = getattr(self.cls, "missing", None)
        return missing() if callable(missing) else []

    @property
    def available(self) -> bool:
        return not self.missing()


class Registry:
    """Registered classes by kind; :class:`castillo_core.plugins.manager.Plugins` fills it from plugins' hooks."""

    def __init__(self, kinds: list[str]) -> None:
        self.records: dict[str, PluginRecord] = {}
        # every registration a name (bare, alias, or qualified "distribution:name") answers to
        self._entries: dict[str, dict[str, list[Registered]]] = {kind: {} for kind in kinds}

    def _drop_entries(self, plugin_name: str, kind: str | None = None) -> None:
        """Forget a plugin's registrations (of one kind, or all), and the conflicts they made."""
        for entry_kind, entries in self._entries.items():
            if kind is not None and entry_kind != kind:
                continue
            for key in list(entries):
                entries[key] = [e for e in entries[key] if e.plugin != plugin_name]
                if not entries[key]:
                    del entries[key]
            prefix = f"{entry_kind}:"
            record = self.records.get(plugin_name)
            if record is not None:
                record.provides = [p for p in record.provides if not p.startswith(prefix)]
        self._refresh_conflicts()

    # -- registration ----------------------------------------------------------------

    def _register(self, kind: str, cls: object, record: PluginRecord) -> None:
        contract = CONTRACTS[kind]
        if kind == "preset":
            if not isinstance(cls, Preset):
                raise PluginError(
                    f"plugin {record.name} registered {cls!r} as a preset, but it is not a "
                    f"castillo_core.Preset instance"
                )
            self._add_entry(kind, cls.name, cls, (), record)
            return
        if not (inspect.isclass(cls) and issubclass(cls, contract)):
            raise PluginError(
                f"plugin {record.name} registered {cls!r} as a {kind}, but it is not a subclass of "
                f"castillo_core.{contract.__name__}"
            )
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            raise PluginError(f"plugin {record.name}: {kind} {cls.__name__} does not implement {missing}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {record.name}: {kind} {cls.__name__} has no `name` class attribute")
        aliases = tuple(getattr(cls, "aliases", ()) or ())
        if kind == "corpus":
            aliases = tuple(dict.fromkeys((*aliases, getattr(cls, "dataset", name))))
        self._add_entry(kind, name, cls, aliases, record)

    def _add_entry(self, kind: str, name: str, obj: Any, aliases: tuple[str, ...], record: PluginRecord) -> None:
        """Index a registration under its name, aliases and qualified names.

        Two plugins may register the same name: both stay, each reachable as
        ``distribution:name`` (or ``plugin:name``), and the bare name becomes ambiguous
        for both (so load order never picks a winner); both plugins report the conflict.
        """
        entries = self._entries[kind]
        entry = Registered(kind, name, obj, record.name, record.distribution, aliases)
        keys = (name, *aliases, f"{record.distribution}:{name}", f"{record.name}:{name}")
        for key in dict.fromkeys(keys):
            same = entries.setdefault(key, [])
            if not any(e.plugin == record.name and e.name == name for e in same):
                same.append(entry)
        record.provides.append(f"{kind}:{name}")
        self._refresh_conflicts()

    def _refresh_conflicts(self) -> None:
        for each in self.records.values():
            each.conflicts = []
        for kind, entries in self._entries.items():
            for key, found in entries.items():
                plugins = sorted({e.plugin for e in found})
                if len(plugins) < 2 or ":" in key:
                    continue
                for entry in found:
                    others = [f"{e.plugin} ({e.distribution})" for e in found if e.plugin != entry.plugin]
                    note = (
                        f"{kind} {key!r} also registered by {', '.join(others)}: use {entry.distribution}:{entry.name}"
                    )
                    record = self.records.get(entry.plugin)
                    if record is not None and note not in record.conflicts:
                        record.conflicts.append(note)

    # -- lookup ----------------------------------------------------------------------

    def entries(self, kind: str) -> list[Registered]:
        """Every registered class of a kind, once each, sorted by name (then distribution)."""
        unique = {id(e): e for found in self._entries[kind].values() for e in found}
        return sorted(unique.values(), key=lambda e: (e.name, e.distribution))

    def get(self, kind: str, name: str) -> Registered:
        """Find a class by name, alias or ``distribution:name`` (case-insensitively), or fail clearly.

        Fails with "did you mean" for an unknown name, and with both candidates for a name
        two plugins register.
        """
        entries = self._entries[kind]
        found = entries.get(name)
        if found is None:
            lowered = {k.lower(): v for k, v in entries.items()}
            found = lowered.get(name.lower())
        if found:
            plugins = {e.plugin for e in found}
            if len(plugins) == 1:
                return found[0]
            choices = " or ".join(f"{e.distribution}:{e.name}" for e in sorted(found, key=lambda e: e.distribution))
            raise UnknownNameError(
                f"{kind} {name!r} is registered by more than one plugin ("
                + ", ".join(f"plugin {e.plugin} of {e.distribution}" for e in found)
                + f"); pick one: {choices}, or disable one with CASTILLO_DISABLE_PLUGINS"
            )
        suggestions = difflib.get_close_matches(name, [k for k in entries if ":" not in k], n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        known = ", ".join(e.name for e in self.entries(kind)) or "none installed"
        failed = [r for r in self.records.values() if r.status == "failed"]
        failed_hint = (
            f" (plugins that failed to load: {', '.join(r.name for r in failed)}; see `castillo plugins`)"
            if failed
            else ""
        )
        raise UnknownNameError(f"unknown {kind} {name!r}{hint} Known: {known}.{failed_hint}")

    def backend(self, name: str) -> type[Backend]:
        return self.get("backend", name).cls

    def corpus(self, name: str) -> type[Corpus]:
        return self.get("corpus", name).cls

    def metric(self, name: str) -> type[Metric]:
        return self.get("metric", name).cls

    def predictor(self, name: str) -> type[Predictor]:
        return self.get("predictor", name).cls

    def executor(self, name: str) -> type[Executor]:
        return self.get("executor", name).cls

    def preset(self, name: str) -> Preset:
        return self.get("preset", name).cls


class Registrar:
    """The ``register`` callback handed to a plugin's hook."""

    def __init__(self, plugins: Registry, kind: str, record: PluginRecord) -> None:
        self._plugins = plugins
        self._kind = kind
        self._record = record

    def __call__(self, cls: object) -> None:
        self._plugins._register(self._kind, cls, self._record)
