"""Secrets never reach a manifest, a log or an error: credentials in URLs are redacted wherever castillo records text.

A backend holds its own secrets (an API key from an environment variable); what the core
records of a run (its command line, its spec, the lock holder's command) goes through
:func:`redact` and each backend's :meth:`castillo_core.Backend.public_options`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_QUERY = re.compile(
    r"(?P<key>[?&](?:api[_-]?key|key|token|access[_-]?token|auth|password|secret|sig|signature)=)[^&#\s]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with URL credentials (``user:pw@``, ``?api_key=``...) replaced by ``***``."""
    return _QUERY.sub(r"\g<key>***", _USERINFO.sub(r"\g<scheme>***@", text))


def redact_value(value: Any) -> Any:
    """:func:`redact` applied to every string inside ``value`` (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value
