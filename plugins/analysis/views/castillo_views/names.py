"""Names from the data (model, dataset, split, detector) on their way into paths.

Two rules, shared by the views, the report and the formats:

- :func:`name_problem` says why a name cannot be a directory of its own (the partition
  directories ``<model>/<dataset>`` that the core's ``Store`` writes, a view's
  default ``OUT/views/<detector>``): empty, ``.`` or ``..``, a path separator, a control
  character (NUL included) or too long once percent-encoded (the
  core's limit). Callers check every name before they write anything, so a hostile name is
  one line naming it and nothing half-written, whatever the core then does with it.
- :func:`file_part` turns a name into a piece of a file name that is always safe: plain
  names (letters, digits, ``. - + = @ , ~``) are kept as they are; anything else is replaced
  and a short hash of the original appended (so two names never meet in one file), and a
  long name is cut with the same hash. No ``%`` is produced, so a file name is also its own
  relative URL (the report's ``<img src>`` and Markdown links).
"""

from __future__ import annotations

import hashlib
import re

from castillo_core import StoreError, segment

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE = re.compile(r"[^\w.+=@,~-]+")


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot name a directory, or None when it can (see the module docstring)."""
    if not isinstance(value, str) or not value:
        return "it is empty" if value == "" or value is None else f"it is a {type(value).__name__}, not a string"
    if _CONTROL.search(value):
        return "it holds control characters (NUL, newline, ...)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text (a lone surrogate)"
    if value in {".", ".."}:
        return "it is a relative directory name"
    if "/" in value or "\\" in value:
        return "it holds a path separator ('/' or '\\'); model ids are stored with '--' for '/'"
    try:
        segment(value, "name")  # the core's own rule for directory names (encoding, length)
    except StoreError:
        return f"it is {len(value)} characters, too long to name a directory (castillo_core.segment)"
    return None


def shown(value: object, limit: int = 80) -> str:
    """``value`` for an error message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def file_part(value: str, max_bytes: int = 72, replacement: str = "_") -> str:
    """``value`` as a safe piece of a file name, at most ``max_bytes`` bytes (UTF-8)."""
    if not _UNSAFE.search(value) and 0 < len(value.encode()) <= max_bytes:
        return value
    safe = _UNSAFE.sub(replacement, value)
    suffix = "~" + _digest(value)
    room = max_bytes - len(suffix)
    cut = safe.encode()[:room].decode("utf-8", "ignore")
    return cut + suffix
