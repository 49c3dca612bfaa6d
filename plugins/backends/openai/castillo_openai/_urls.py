"""Base URLs taken apart so that credentials are used but never shown (no httpx import).

``-B base_url`` may carry ``user:password@`` and credential query parameters
(``api_key=``, ``key=``, ``token=``, ...). Requests use them; everything that is shown
or recorded (messages, logs, the manifest's provenance) uses :attr:`SplitURL.public`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["SECRET_PARAMS", "SplitURL", "public_url", "redact", "split_url"]

# Query parameters that carry credentials (compared in lower case): sent, never recorded.
SECRET_PARAMS = frozenset(
    {"api_key", "api-key", "apikey", "key", "token", "access_token", "auth", "auth_token", "password", "secret"}
)

SECRETS_SHOWN_AS = "[redacted]"


@dataclass(frozen=True)
class SplitURL:
    """One base URL taken apart: what requests use, and what may be shown or recorded."""

    base: str  # scheme://host[:port]/path: no user:password, no query
    public: str  # base plus the query parameters that carry no credentials
    params: tuple[tuple[str, str], ...]  # the whole query, sent with every request
    auth: tuple[str, str] | None  # user and password from the URL (basic auth)
    secrets: tuple[str, ...]  # values never shown: the password, the user, secret parameter values


def split_url(url: str) -> SplitURL:
    """Take ``url`` apart into the request address, credentials, query and public form.

    Raises ValueError for what is not a URL (a bad port or IPv6 address).
    """
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = parts.port  # ValueError for a port that is not a number
    if port is not None:
        host = f"{host}:{port}"
    base = urlunsplit((parts.scheme, host, parts.path, "", ""))
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    public_params = [(k, v) for k, v in params if k.lower() not in SECRET_PARAMS]
    public = urlunsplit((parts.scheme, host, parts.path, urlencode(public_params), ""))
    secrets: list[str] = []
    auth = None
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        auth = (user, password)
        secrets += [v for v in (parts.password, password) if v]
        # The user too, unless so short that redacting it would garble every message.
        secrets += [v for v in (parts.username, user) if v and len(v) >= 3]
    for k, v in params:
        if k.lower() in SECRET_PARAMS and v:
            secrets.append(v)
    raw_query = parts.query
    for piece in raw_query.split("&"):
        k, _, v = piece.partition("=")
        if unquote(k).lower() in SECRET_PARAMS and v:
            secrets.append(v)  # the encoded form too, as a logged URL shows it
    return SplitURL(base, public, params, auth, tuple(dict.fromkeys(secrets)))


def public_url(url: str) -> str:
    """``url`` without user:password and without credential query parameters: fit to record."""
    return split_url(url).public


def redact(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with every secret replaced (longest first, so no part of one survives)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, SECRETS_SHOWN_AS)
    return text
