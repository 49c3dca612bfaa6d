"""HTTP with retries: one ``httpx.AsyncClient``, bounded exponential backoff, a run budget.

Imported only when a server is opened (it imports httpx). Every request names what it
is for ("prompt 1a2b... sample 3"), so an error says which request failed and why.

Secrets never reach a message, a log line or the manifest: the base URL is split once
(:func:`split_url`) into the address requests are built on (no user:password, no
query), the credentials (sent as basic auth), the query (sent as parameters) and the
public form that may be recorded (no credentials, no ``api_key``/``key``/``token``
parameters). Headers are not part of any message, server text quoted in an error has
every secret redacted, a header the HTTP library refuses is reported without its
value, and httpx's own log lines are redacted while a session is open.

Each request has one deadline, ``timeout``, for the whole exchange (connect, send,
wait, read the full body): a server that trickles a byte a second still times out.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from castillo_core import BackendError
from castillo_openai._urls import SplitURL, redact, split_url

log = logging.getLogger("castillo_openai")

# 408 and 409 are what some gateways answer while a backend restarts; 429 is rate
# limiting; 5xx a server in trouble. Everything else in 4xx is the request's fault.
RETRY_STATUSES = frozenset({408, 409, 429})

# What servers say when the prompt plus max_tokens does not fit their context: the
# OpenAI/vLLM wording and code, llama.cpp's server ("exceeds the available context
# size", exceed_context_size_error), llama-cpp-python's ValueError, and the numpy error
# llama-cpp-python's server answers (HTTP 500) when generation runs past its n_ctx
# (it writes the tokens into arrays of n_ctx rows).
CONTEXT_ERROR = re.compile(
    r"context[_ ]length|context[_ ]window|context[_ ]size|maximum context|n_ctx|exceed_context|"
    r"could not broadcast input array from shape",
    re.IGNORECASE,
)


class RedactingFilter(logging.Filter):
    """Rewrites records of httpx's loggers so that no secret reaches a log handler.

    httpx logs every request's URL at INFO (``--debug`` shows it), query included.
    """

    LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy")

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is dropped, not leaked
            return False
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True

    def install(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def remove(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)


class ContextOverflow(BackendError):
    """The server said (or crashed showing) that the prompt plus max_tokens exceeds its context."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; the delays are always at most ``backoff_max``."""

    max_retries: int = 6
    max_total_retries: int = 100
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Delay before retry number ``attempt + 1``: exponential with jitter, bounded.

        Jitter (a uniform factor in [0.5, 1]) spreads the retries of concurrent requests
        that failed together, so a restarting server is not hit by all of them at once.
        A Retry-After header is honoured as a floor, still capped by ``backoff_max`` so a
        server asking for an hour cannot stall a run silently.
        """
        expo = min(self.backoff_max, self.backoff_base * (2.0**attempt)) * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            expo = max(expo, retry_after)
        return min(self.backoff_max, expo)


@dataclass
class RetryEvent:
    """One retry that was slept: what, why, and how long (tests and benchmarks read these)."""

    what: str
    attempt: int
    reason: str
    delay: float


@dataclass
class Session:
    """An AsyncClient plus the retry policy and the run's retry budget.

    Created and used inside one event loop (the backend's own). ``base_url`` may carry
    user:password and a query: they are used for every request and never shown.
    """

    base_url: str
    headers: dict[str, str]
    timeout: float
    connect_timeout: float
    concurrency: int
    policy: RetryPolicy
    secrets: tuple[str, ...] = ()  # values never shown besides the URL's own (the API key)
    use_url_auth: bool = True  # send the URL's user:password as basic auth (not when a key is sent)
    retries: list[RetryEvent] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None
    _rng: random.Random = field(default_factory=random.Random)
    _filter: RedactingFilter | None = None
    endpoint: SplitURL = field(init=False)

    def __post_init__(self) -> None:
        self.endpoint = split_url(self.base_url)
        secrets = [*self.secrets, *self.endpoint.secrets]
        if self.endpoint.auth is not None and self.use_url_auth:
            # The basic-auth header value is user:password in base64: a server echoing it
            # would show the password to anyone who decodes it.
            secrets.append(base64.b64encode(":".join(self.endpoint.auth).encode()).decode())
        self.secrets = tuple(dict.fromkeys(s for s in secrets if s))

    @property
    def public_base(self) -> str:
        """The base URL as it may be shown and recorded."""
        return self.endpoint.public

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            if self.secrets and self._filter is None:
                self._filter = RedactingFilter(self.secrets)
                self._filter.install()
            auth = self.endpoint.auth if self.use_url_auth else None
            self._client = httpx.AsyncClient(
                headers=self.headers,
                auth=auth,
                params=list(self.endpoint.params) or None,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout, pool=None),
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._filter is not None:
            self._filter.remove()
            self._filter = None

    def url(self, path: str) -> str:
        """The URL a request goes to (no credentials: those travel as auth and parameters)."""
        return self.endpoint.base.rstrip("/") + "/" + path.lstrip("/")

    def public(self, path: str) -> str:
        """The URL of ``path`` as messages show it."""
        return self.url(path)

    def redact(self, text: str) -> str:
        """Server text safe to quote: every secret replaced, and cut to a readable length."""
        text = redact(text, self.secrets)
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:300] + "..."

    async def request_json(self, method: str, path: str, body: Any, what: str, missing_ok: bool = False) -> Any:
        """Send one request, retrying what is worth retrying; the parsed JSON body.

        Each attempt has one deadline, ``timeout`` seconds, for the whole exchange, body
        included. Retried: connection errors, timeouts, HTTP 408/409/429 and 5xx, each up
        to ``max_retries`` times and within the run's ``max_total_retries``. Not retried:
        other 4xx (the request is wrong), a request that cannot be sent (a header value
        the HTTP library refuses), a 2xx whose body is not JSON (the server is not what
        castillo was told it is), and an error saying the context is too small
        (:class:`ContextOverflow`). ``missing_ok``: a 404 or 405 answers None (an
        optional route such as GET /models).
        """
        url = self.url(path)
        shown = self.public(path)
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await asyncio.wait_for(self.client.request(method, url, json=body), self.timeout)
            except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    reason = (
                        f"no answer within the timeout (no connection within -B connect_timeout="
                        f"{self.connect_timeout:g} s)"
                    )
                else:
                    reason = (
                        f"no answer within the timeout: the whole response must arrive within -B timeout="
                        f"{self.timeout:g} s, however slowly the server sends it; raise -B timeout=SECONDS for "
                        "long generations"
                    )
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, UnicodeEncodeError) as exc:
                # Nothing was sent, and a retry would fail the same way. The library's text
                # quotes the offending header (the API key), so it is not shown.
                raise BackendError(
                    f"backend openai: {what}: {method} {shown} could not be sent ({type(exc).__name__}: a header "
                    "or the URL holds a character HTTP does not allow; check the value of the variable named by "
                    "-B api_key_env, -B base_url and -B extra); not retried"
                ) from None
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {self.redact(str(exc)) or 'connection failed'}"
            else:
                status = response.status_code
                if status < 300:
                    return self._decode(response, what, shown)
                if missing_ok and status in (404, 405):
                    return None
                detail = self._detail(response)
                if CONTEXT_ERROR.search(detail):
                    raise ContextOverflow(
                        f"backend openai: {what}: {shown} answered HTTP {status}{detail}", status, detail
                    )
                if status in RETRY_STATUSES or status >= 500:
                    reason = f"HTTP {status}{detail}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                else:
                    raise BackendError(self._refusal(status, detail, what, shown))
            if attempt >= self.policy.max_retries:
                raise BackendError(
                    f"backend openai: {what}: {method} {shown} failed after {attempt} "
                    f"retr{'y' if attempt == 1 else 'ies'} (-B max_retries={self.policy.max_retries}); last error: "
                    f"{reason}. Check that the server is up, then re-run the same command to resume: finished "
                    "prompts are stored."
                )
            if len(self.retries) >= self.policy.max_total_retries:
                raise BackendError(
                    f"backend openai: {what}: {method} {shown} failed ({reason}) and this run has "
                    f"already retried {len(self.retries)} times (-B max_total_retries="
                    f"{self.policy.max_total_retries}); the server at {self.public_base} looks unhealthy. "
                    "Re-run the same command to resume when it is back: finished prompts are stored."
                )
            delay = self.policy.delay(attempt, retry_after, self._rng)
            attempt += 1
            self.retries.append(RetryEvent(what, attempt, reason, delay))
            log.warning(
                "backend openai: %s: %s; retry %d/%d in %.2f s",
                what,
                reason,
                attempt,
                self.policy.max_retries,
                delay,
            )
            await asyncio.sleep(delay)

    def _detail(self, response: httpx.Response) -> str:
        if response.status_code in (401, 403):
            return ""  # auth errors may echo (parts of) the key: never quote them
        try:
            text = response.text
        except UnicodeDecodeError:
            return ""
        try:  # the OpenAI error shape: quote its message alone
            error = json.loads(text).get("error")
            message = error.get("message") if isinstance(error, dict) else error
            if isinstance(message, str) and message.strip():
                text = message
        except (ValueError, AttributeError):
            pass
        return f": {self.redact(text)}" if text.strip() else ""

    def _refusal(self, status: int, detail: str, what: str, shown: str) -> str:
        hint = {
            401: "the server refused the credentials; set the environment variable named by -B api_key_env "
            "(or the user:password of -B base_url)",
            403: "the server refused the credentials; set the environment variable named by -B api_key_env "
            "(or the user:password of -B base_url)",
            404: "check -B base_url (it usually ends in /v1), -B endpoint and the model name",
        }.get(status, "the server rejected the request; check the model name and -B extra")
        return f"backend openai: {what}: {shown} answered HTTP {status}{detail} ({hint})"

    def _decode(self, response: httpx.Response, what: str, shown: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = self.redact(response.content[:200].decode("utf-8", "replace"))
            raise BackendError(
                f"backend openai: {what}: {shown} answered HTTP "
                f"{response.status_code} with a body that is not JSON ({snippet!r}); is -B base_url an "
                "OpenAI-compatible API?"
            ) from None
