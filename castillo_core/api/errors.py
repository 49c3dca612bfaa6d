"""Errors a user can cause.

Every error here carries a message that names the file, record, option or plugin at
fault and says what to do. The CLI prints them without a traceback (``--debug`` shows
it); anything that is not a :class:`CastilloError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class CastilloError(Exception):
    """Base class of every error a user can cause and fix."""

    exit_code = 2
    retryable = False  # whether trying the same work again may succeed (a cluster executor retries those)


class ConfigError(CastilloError):
    """A run spec, grid file or command-line option is invalid."""


class PluginError(CastilloError):
    """A plugin could not be loaded, registered or found."""


class UnknownNameError(PluginError):
    """A backend, corpus or metric name that no installed plugin provides."""


class BackendUnavailableError(PluginError):
    """A backend whose library is not installed."""


class CorpusError(CastilloError):
    """A corpus source that cannot be read, or a record that cannot become a prompt."""


class BackendError(CastilloError):
    """A backend failed in a way the user can act on (a model that cannot load, ...)."""


class BackendCrashed(BackendError):
    """A backend raised while generating: named and resumable, and possibly transient (retried)."""

    retryable = True


class StoreError(CastilloError):
    """An output directory that cannot be written or resumed into."""


class ConfigChangedError(StoreError):
    """A run whose config differs from what the output already holds."""


class Interrupted(CastilloError):
    """The run was interrupted (SIGINT) after flushing what it had."""

    exit_code = 130
