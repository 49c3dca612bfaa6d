"""The ``openai`` backend: any OpenAI-compatible HTTP server, measured through its API.

This module is imported when castillo lists its plugins, so it stays cheap: httpx and
the HTTP machinery (:mod:`castillo_openai._http`, :mod:`castillo_openai._run`) are
imported inside ``open``/``generate``.

What the server owns, castillo records rather than pretends: the chat template is
applied by the server, token counts are the server's ``usage``, and the prompt token
count is only known after a request (0 at render time; the server's
``usage.prompt_tokens`` goes back with each prompt's result as ``input_size``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from castillo_core import (
    Backend,
    BackendError,
    ConfigError,
    GenerationConfig,
    GenerationRequest,
    ModelInfo,
    ModelSpec,
    Prompt,
    PromptResult,
    Rendered,
    SamplingSettings,
    __version__,
    parse_options,
)
from castillo_openai._urls import public_url, split_url

log = logging.getLogger("castillo_openai")

# Options that change how (fast, patiently, where) requests go, not what comes back:
# left out of the config hash, so a run resumed against the same model on another
# address, with more concurrency or more patience, continues the same dataset.
TRANSPORT_OPTIONS = frozenset(
    {
        "base_url",
        "base_url_env",
        "api_key_env",
        "concurrency",
        "timeout",
        "connect_timeout",
        "max_retries",
        "max_total_retries",
        "backoff_base",
        "backoff_max",
        "check_model",
    }
)

# Request fields castillo sets itself; ``extra`` may not override them, or the recorded
# settings would no longer be the applied ones.
RESERVED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "n",
        "seed",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "repeat_penalty",
    }
)

SERVER_TEMPLATE = "(applied by the server; not visible to castillo)"


def checked_url(value: str) -> str:
    """An http(s) base URL, its path defaulting to /v1; ValueError (never quoting credentials) if not one."""
    try:
        parts = urlsplit(value.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a bad port or IPv6 address
        valid = False
    if not valid:
        # Never the value itself (it may hold user:password): at most its public form.
        try:
            shown = repr(public_url(value)) if "://" in value and urlsplit(value.strip()).hostname else None
        except ValueError:
            shown = None
        raise ValueError(
            "expected an http(s) URL such as http://127.0.0.1:8000/v1, got "
            + (shown or "a value that is not one (not shown: it may hold credentials)")
        )
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


class OpenAIOptions(BaseModel):
    """Backend options (``-B key=value``)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="the API root, usually ending in /v1 (added when the path is empty)"
    )
    base_url_env: str | None = Field(
        None,
        description="name of an environment variable holding the base URL (for one with user:password or a "
        "token: it then stays off the command line and out of every record); overrides base_url",
    )
    model: str | None = Field(
        None, description="the model name the server knows, when it differs from --model (the stored model id)"
    )
    api_key_env: str | None = Field(
        None, description="name of the environment variable holding the API key (the key is never recorded)"
    )
    endpoint: Literal["chat", "completion"] = Field(
        "chat", description="chat: /chat/completions (the server applies its chat template); completion: raw text"
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="extra request fields, passed through as given")
    sampling_fields: Literal["extended", "vllm", "llamacpp", "openai"] = Field(
        "extended",
        description="which sampling fields beyond temperature/top_p to send: extended (top_k, min_p and both "
        "repetition_penalty and repeat_penalty), vllm (repetition_penalty), llamacpp (repeat_penalty), openai (none)",
    )
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="the request field that carries --max-new-tokens"
    )
    n_per_request: int = Field(
        1, ge=1, le=256, description="samples asked per request (n); above 1 needs per-choice token counts"
    )
    count_end_token: bool = Field(
        False, description="add the end token to the server's count of stopped samples (servers that exclude it)"
    )
    concurrency: int = Field(8, ge=1, le=4096, description="requests in flight at once")
    timeout: float = Field(600.0, gt=0, description="seconds to wait for one response")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for a connection")
    max_retries: int = Field(6, ge=0, le=100, description="retries of one request (429, 5xx, connection errors)")
    max_total_retries: int = Field(200, ge=0, description="retries of the whole run before it stops")
    backoff_base: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles per retry, jittered")
    backoff_max: float = Field(30.0, ge=0, description="longest retry delay in seconds (caps Retry-After too)")
    check_model: bool = Field(True, description="check at start that GET /models lists the model")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return checked_url(value)

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(RESERVED_FIELDS & set(value))
        if clash:
            raise ValueError(
                f"extra may not set {', '.join(clash)}: castillo sets them from --model, -n, --seed, "
                "--max-new-tokens and the sampling flags, and records them"
            )
        return value


class OpenAIBackend(Backend):
    """A model behind an OpenAI-compatible server; N samples per prompt, concurrently."""

    name = "openai"
    aliases = ("openai-compatible", "oai")
    description = "any OpenAI-compatible HTTP server (vLLM serve, llama.cpp server, SGLang, TGI); async, with retries"
    requires = ("httpx",)
    install_hint = "pip install castillo-openai (or: pip install httpx)"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = parse_options(OpenAIOptions, spec.options, "backend openai")
        self.server_model = self.options.model or spec.model or ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.session: Any = None  # castillo_openai._http.Session, once opened
        self.stats: Any = None  # castillo_openai._run.Stats: the server's prompt counts, odd finish reasons

    # -- cheap class-level answers ----------------------------------------------------------

    @classmethod
    def model_id(cls, spec: ModelSpec) -> str:
        """--model, else the server-side name (-B model=...): what the dataset stores."""
        options = spec.options if isinstance(spec.options, Mapping) else {}
        model = spec.model or options.get("model")
        if not model or not isinstance(model, str):
            raise ConfigError(
                "backend openai: no model given; pass --model NAME (the name the server serves, or the id to store "
                "with -B model=SERVER_NAME)"
            )
        return model

    @classmethod
    def hashed_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in options.items() if k not in TRANSPORT_OPTIONS}

    @classmethod
    def public_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options as they may be recorded or shown: ``base_url`` without its credentials.

        ``base_url`` loses user:password and credential query parameters (api_key, key,
        token, ...); the API key itself is never an option (only its variable's name).
        Meant for whatever writes the run's options (the manifest's run record).
        """
        out = dict(options)
        url = out.get("base_url")
        if isinstance(url, str):
            try:
                out["base_url"] = public_url(url)
            except ValueError:
                out["base_url"] = "(not a URL; not shown)"
        return out

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> ModelInfo:
        import httpx

        from castillo_openai._http import RetryPolicy, Session
        from castillo_openai._run import Stats

        options = self.options
        if not self.server_model:
            self.model_id(self.spec)  # raises the clear error
        headers = {"User-Agent": f"castillo/{__version__} castillo-openai"}
        base_url = self._base_url()
        secret = self._api_key()
        url_auth = split_url(base_url).auth is not None
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
            if url_auth:
                log.warning(
                    "backend openai: -B base_url carries user:password and -B api_key_env=%s names an API key; "
                    "both would go in the Authorization header, so only the API key is sent",
                    options.api_key_env,
                )
        if self.spec.dtype:
            log.warning("backend openai: --dtype %s ignored; the server decides the model's types", self.spec.dtype)
        self._loop = asyncio.new_event_loop()
        self.session = Session(
            base_url=base_url,
            headers=headers,
            timeout=options.timeout,
            connect_timeout=options.connect_timeout,
            concurrency=options.concurrency,
            policy=RetryPolicy(
                max_retries=options.max_retries,
                max_total_retries=options.max_total_retries,
                backoff_base=options.backoff_base,
                backoff_max=options.backoff_max,
            ),
            secrets=(secret,) if secret else (),
            use_url_auth=not secret,
        )
        self.stats = Stats()
        served = self._check_model() if options.check_model else None
        url = self.session.public_base
        chat = options.endpoint == "chat"
        return ModelInfo(
            model=self.model_id(self.spec),
            revision=self.spec.revision,
            dtype=None,
            chat_template=SERVER_TEMPLATE if chat else None,
            library_versions={"httpx": httpx.__version__},
            hardware=f"remote: OpenAI-compatible server at {url} (hardware not visible to castillo)",
            extra={
                "base_url": url,
                "server_model": self.server_model,
                "endpoint": options.endpoint,
                "served_models": served,  # the first 50 that GET /models listed
                "api_key_env": options.api_key_env,  # the variable's name only, never its value
                "base_url_env": options.base_url_env,  # likewise
                "chat_template": "the server's own" if chat else "none: the prompt text is sent as is",
                "token_counts": "the server's usage.completion_tokens"
                + (" per request of one sample" if options.n_per_request == 1 else " split by per-choice counts")
                + (", plus the end token of stopped samples" if options.count_end_token else ""),
                "prompt_tokens": "input_size is the server's usage.prompt_tokens (render() cannot count tokens "
                "without the server's tokenizer and template)",
                "sampling_fields": options.sampling_fields,
                "n_per_request": options.n_per_request,
            },
        )

    def _base_url(self) -> str:
        """``base_url``, or the URL in the variable named by ``base_url_env``."""
        name = self.options.base_url_env
        if not name:
            return self.options.base_url
        value = os.environ.get(name, "").strip()
        if not value:
            raise ConfigError(
                f"backend openai: -B base_url_env={name} names an environment variable that is not set or empty; "
                "export it with the server's base URL"
            )
        try:
            return checked_url(value)
        except ValueError as exc:
            raise ConfigError(f"backend openai: ${name}: {exc}") from None

    def _api_key(self) -> str | None:
        """The API key from the variable named by ``api_key_env``, without surrounding whitespace.

        A key read from a file often ends in a newline (or CR LF); it is stripped. A key
        that still holds a control or non-ASCII character cannot go in an HTTP header: it
        is refused here, once, without showing it, rather than failing every request.
        """
        name = self.options.api_key_env
        if not name:
            return None
        key = (os.environ.get(name) or "").strip()
        if not key:
            raise ConfigError(
                f"backend openai: -B api_key_env={name} names an environment variable that is not set or empty; "
                "export it with the API key"
            )
        if any(not (" " <= ch <= "~") for ch in key):
            raise ConfigError(
                f"backend openai: the API key in ${name} holds a control or non-ASCII character, which an HTTP "
                "header cannot carry (the key is not shown); set the variable to the key alone"
            )
        return key

    def _check_model(self) -> list[str] | None:
        """The models GET /models lists; an error when it lists others but not ours.

        Worth a request: some servers (llama-cpp-python's) answer any model name with
        the one model they have, which would store another model's numbers under ours.
        """
        assert self._loop is not None
        data = self._loop.run_until_complete(
            self.session.request_json("GET", "models", None, "listing the server's models", missing_ok=True)
        )
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            return None
        served = [m.get("id") for m in data["data"] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if served and self.server_model not in served:
            shown = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            raise BackendError(
                f"backend openai: the server at {self.session.public_base} serves {shown}, not {self.server_model!r}; "
                "pass --model (or -B model=, the server-side name) as one of them, or -B check_model=false"
            )
        return served[:50]

    def close(self) -> None:
        if self._loop is None:
            return
        if self.session is not None:
            self._loop.run_until_complete(self.session.aclose())
        if self.stats is not None and self.stats.over_cap:
            log.warning(
                "backend openai: %d sample(s) came back longer than max_tokens and were stored capped",
                self.stats.over_cap,
            )
        if self.stats is not None and self.stats.unexpected_finish:
            log.warning(
                "backend openai: finish reasons castillo does not know, stored as 'stop': %s",
                ", ".join(f"{k} x{v}" for k, v in sorted(self.stats.unexpected_finish.items())),
            )
        self._loop.close()
        self._loop = None

    # -- sampling settings ------------------------------------------------------------------

    def sampling(self, config: GenerationConfig) -> SamplingSettings:
        """The explicit values, all sent to the server, so the recorded values are the applied ones.

        ``--model-defaults`` is refused: the model's generation config lives on the
        server and the API does not expose it, so the stored top_k/top_p/temp columns
        would be guesses. Unset values are sent as their neutral values (top_k 0, min_p
        0, repetition penalty 1), since servers' own defaults differ (llama.cpp: top_k
        40, min_p 0.05).
        """
        if config.model_defaults:
            raise ConfigError(
                "backend openai: --model-defaults needs the model's generation config, which the server keeps to "
                "itself; give --temperature, --top-p and --top-k explicitly instead"
            )
        settings = SamplingSettings.from_config(config, sampling_fields=self.options.sampling_fields)
        if self.options.sampling_fields == "openai":
            off = [
                f"{name}={value}"
                for name, value, neutral in (
                    ("top_k", settings.top_k, 0),
                    ("min_p", settings.min_p, 0.0),
                    ("repetition_penalty", settings.repetition_penalty, 1.0),
                )
                if value != neutral
            ]
            if off:
                raise ConfigError(
                    f"backend openai: -B sampling_fields=openai sends only temperature and top_p, so {', '.join(off)} "
                    "would not be applied; use sampling_fields=extended (vLLM, llama.cpp, SGLang) or drop them"
                )
        return settings

    # -- rendering --------------------------------------------------------------------------

    def render(self, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
        """Nothing to render here: the server applies its template and counts the tokens.

        ``input_size`` is 0 (unknown at render time) and nothing is truncated: castillo
        cannot cut a prompt in tokens it cannot see. A prompt over the server's context
        is the server's error, reported naming the prompt.
        """
        return [Rendered(input_size=0, truncated=False) for _ in prompts]

    # -- generation -------------------------------------------------------------------------

    def _shape(self, settings: SamplingSettings, config: GenerationConfig) -> Any:
        from castillo_openai._run import RequestShape

        options = self.options
        body: dict[str, Any] = {
            "model": self.server_model,
            options.max_tokens_field: config.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stream": False,
        }
        if options.sampling_fields != "openai":
            body["top_k"] = settings.top_k
            body["min_p"] = settings.min_p
        if options.sampling_fields in ("extended", "vllm"):
            body["repetition_penalty"] = settings.repetition_penalty
        if options.sampling_fields in ("extended", "llamacpp"):
            body["repeat_penalty"] = settings.repetition_penalty
        body.update(options.extra)
        chat = options.endpoint == "chat"
        return RequestShape(
            path="chat/completions" if chat else "completions",
            chat=chat,
            body=body,
            max_new_tokens=config.max_new_tokens,
            n_per_request=options.n_per_request,
            count_end_token=options.count_end_token,
        )

    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, config: GenerationConfig
    ) -> Iterator[PromptResult]:
        """Yield each prompt's result as soon as its N samples are in (see :mod:`castillo_openai._run`)."""
        from castillo_openai._run import Runner

        if not requests:
            return
        if self._loop is None:
            raise RuntimeError("backend openai: open() was not called")
        loop = self._loop
        runner = Runner(self.session, self._shape(settings, config), requests, self.stats)
        try:
            loop.run_until_complete(runner.start())
            while True:
                result = loop.run_until_complete(runner.next_result())
                if result is None:
                    return
                yield result
        finally:
            loop.run_until_complete(runner.stop())
