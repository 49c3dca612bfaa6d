"""HTTP with retries: one ``httpx.AsyncClient``, bounded exponential backoff, a run budget.

Imported only when a server is opened (it imports httpx). Every request names what it
is for ("prompt 1a2b... sample 3"), so an error says which request failed and why,
and never carries the API key: headers are not part of any message, and server text
quoted in an error has the key redacted.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from castillo_core import BackendError

log = logging.getLogger("castillo_openai")

# 408 and 409 are what some gateways answer while a backend restarts; 429 is rate
# limiting; 5xx a server in trouble. Everything else in 4xx is the request's fault.
RETRY_STATUSES = frozenset({408, 409, 429})


def public_url(url: str) -> str:
    """``url`` without user:password, fit for messages and the manifest."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


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

    Created and used inside one event loop (the backend's own).
    """

    base_url: str
    headers: dict[str, str]
    timeout: float
    connect_timeout: float
    concurrency: int
    policy: RetryPolicy
    secret: str | None = None
    retries: list[RetryEvent] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers=self.headers,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout, pool=None),
                limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def redact(self, text: str) -> str:
        """Server text safe to quote: the API key replaced, and cut to a readable length."""
        if self.secret:
            text = text.replace(self.secret, "[api key]")
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:300] + "..."

    async def request_json(self, method: str, path: str, body: Any, what: str, missing_ok: bool = False) -> Any:
        """Send one request, retrying what is worth retrying; the parsed JSON body.

        Retried: connection errors, timeouts, HTTP 408/409/429 and 5xx, each up to
        ``max_retries`` times and within the run's ``max_total_retries``. Not retried:
        other 4xx (the request is wrong) and a 2xx whose body is not JSON (the server
        is not what castillo was told it is). ``missing_ok``: a 404 or 405 answers None
        (an optional route such as GET /models).
        """
        url = self.url(path)
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = await self.client.request(method, url, json=body)
            except httpx.TimeoutException as exc:
                reason = f"no answer within the timeout ({type(exc).__name__}; raise -B timeout=SECONDS)"
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {self.redact(str(exc)) or 'connection failed'}"
            else:
                status = response.status_code
                if status < 300:
                    return self._decode(response, what)
                if missing_ok and status in (404, 405):
                    return None
                detail = self._detail(response)
                if status in RETRY_STATUSES or status >= 500:
                    reason = f"HTTP {status}{detail}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                else:
                    raise BackendError(self._refusal(status, detail, what, url))
            if attempt >= self.policy.max_retries:
                raise BackendError(
                    f"backend openai: {what}: {method} {public_url(url)} failed after {attempt} "
                    f"retr{'y' if attempt == 1 else 'ies'} (-B max_retries={self.policy.max_retries}); last error: "
                    f"{reason}. Check that the server is up, then re-run the same command to resume: finished "
                    "prompts are stored."
                )
            if len(self.retries) >= self.policy.max_total_retries:
                raise BackendError(
                    f"backend openai: {what}: {method} {public_url(url)} failed ({reason}) and this run has "
                    f"already retried {len(self.retries)} times (-B max_total_retries="
                    f"{self.policy.max_total_retries}); the server at {public_url(self.base_url)} looks unhealthy. "
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
        return f": {self.redact(text)}" if text.strip() else ""

    def _refusal(self, status: int, detail: str, what: str, url: str) -> str:
        hint = {
            401: "the server refused the API key; set the environment variable named by -B api_key_env",
            403: "the server refused the API key; set the environment variable named by -B api_key_env",
            404: "check -B base_url (it usually ends in /v1), -B endpoint and the model name",
        }.get(status, "the server rejected the request; check the model name and -B extra")
        return f"backend openai: {what}: {public_url(url)} answered HTTP {status}{detail} ({hint})"

    def _decode(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            snippet = self.redact(response.content[:200].decode("utf-8", "replace"))
            raise BackendError(
                f"backend openai: {what}: {public_url(str(response.request.url))} answered HTTP "
                f"{response.status_code} with a body that is not JSON ({snippet!r}); is -B base_url an "
                "OpenAI-compatible API?"
            ) from None
