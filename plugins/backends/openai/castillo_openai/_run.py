"""Sampling a cell through the API: bounded concurrency, one result per prompt as it completes.

A cell's prompts become jobs (one per request: a sample, or ``n_per_request`` samples),
taken in prompt order by ``concurrency`` workers, so early prompts finish first and a
killed run loses little. A prompt's result is queued as soon as its N samples are in.
On the first fatal error no new job starts; requests already in flight are allowed to
finish, their completed prompts are handed over, and then the error is raised, so the
engine stores every prompt that did complete.

A sample the server cut because its context is full (``finish_reason`` "length" below
``max_tokens``, or the server's error saying so) is such an error, naming the prompt, the
server and what to do: its length is the server's limit, not the model's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from castillo_core import BackendError, Completion, GenerationRequest, PromptResult
from castillo_openai._http import ContextOverflow, Session

log = logging.getLogger("castillo_openai")

# Finish reasons that end a completion normally without the cap. Anything else that a
# server sends is stored as "stop" (the model ended the answer, not the cap) and counted
# in ``Stats.unexpected_finish`` so it is reported.
NORMAL_STOPS = frozenset({"stop", "eos", "eos_token", "end_turn", "stop_sequence"})


@dataclass(frozen=True)
class RequestShape:
    """What every request of a cell carries besides the prompt and the seed."""

    path: str  # "chat/completions" or "completions"
    chat: bool
    body: dict[str, Any]  # model, max tokens, sampling fields, extra fields
    max_new_tokens: int
    n_per_request: int
    count_end_token: bool


@dataclass
class Stats:
    """What the server reported beyond the completions: kept for provenance and tests."""

    prompt_tokens: dict[str, int] = field(default_factory=dict)  # prompt_id -> server's usage.prompt_tokens
    unexpected_finish: dict[str, int] = field(default_factory=dict)  # raw finish_reason -> count
    over_cap: int = 0  # samples the server reported longer than max_tokens (stored capped)
    requests: int = 0


@dataclass
class _Job:
    request: GenerationRequest
    first: int  # first sample index of this request
    count: int  # samples asked in this request

    @property
    def what(self) -> str:
        pid = self.request.prompt.prompt_id
        if self.count == 1:
            return f"prompt {pid} sample {self.first} (seed {self.request.seed + self.first})"
        last = self.first + self.count - 1
        return f"prompt {pid} samples {self.first}-{last} (seed {self.request.seed + self.first})"


@dataclass
class _Slot:
    request: GenerationRequest
    completions: list[Completion | None]
    started: float | None = None
    missing: int = 0


def jobs_for(requests: Sequence[GenerationRequest], n_per_request: int) -> Iterator[_Job]:
    """Prompt-major: all requests of prompt 0, then of prompt 1, ..."""
    for request in requests:
        for first in range(0, request.n, n_per_request):
            yield _Job(request, first, min(n_per_request, request.n - first))


def request_body(shape: RequestShape, job: _Job) -> dict[str, Any]:
    body = dict(shape.body)
    body["n"] = job.count
    body["seed"] = job.request.seed + job.first
    prompt = job.request.prompt
    if shape.chat:
        body["messages"] = prompt.chat_messages()
    else:
        body["prompt"] = (
            prompt.prompt_text if not prompt.messages else "\n\n".join(m["content"] for m in prompt.chat_messages())
        )
    return body


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _choice_tokens(choice: dict[str, Any]) -> tuple[int | None, str]:
    """A choice's own token count where the server gives one, and where it came from."""
    usage = choice.get("usage")
    if isinstance(usage, dict) and _int(usage.get("completion_tokens")) is not None:
        return usage["completion_tokens"], "choice usage"
    token_ids = choice.get("token_ids")
    if isinstance(token_ids, list):
        return len(token_ids), "choice token_ids"
    return None, ""


CONTEXT_ADVICE = (
    "Start the server with a larger context (llama.cpp: --ctx-size; llama-cpp-python: --n_ctx; vLLM: "
    "--max-model-len) or lower --max-new-tokens (this backend cannot shorten prompts: the server tokenizes them, "
    "so --max-prompt-tokens does not apply). Finished prompts are stored; re-run the same command to resume."
)


def context_message(
    job: _Job, server: str, cap: int, prompt_tokens: int | None, generated: int | None = None, said: str = ""
) -> str:
    """One line: the server's context is too small for this prompt plus max tokens, and what to do."""
    prompt = f"the prompt ({prompt_tokens} tokens)" if prompt_tokens is not None else "the prompt"
    need = f" = {prompt_tokens + cap} tokens" if prompt_tokens is not None else ""
    if generated is not None:
        ended = f"; the sample ended at {prompt_tokens + generated} tokens" if prompt_tokens is not None else ""
        return (
            f"backend openai: {job.what}: the server at {server} stopped the sample at {generated} tokens with "
            f"finish_reason 'length', below max_tokens={cap}: its context (n_ctx) is smaller than {prompt} + "
            f"--max-new-tokens {cap}{need}{ended} (or it caps output tokens itself). {CONTEXT_ADVICE}"
        )
    return (
        f"backend openai: {job.what}: the server at {server} has no room in its context (n_ctx) for {prompt} + "
        f"--max-new-tokens {cap}{need}: it answered {said.rstrip('. ')}. {CONTEXT_ADVICE}"
    )


def parse_completions(
    data: Any, job: _Job, shape: RequestShape, latency: float, stats: Stats, url: str, server: str = ""
) -> list[Completion]:
    """The job's completions from a response body, or a BackendError naming the request."""
    what = f"backend openai: {job.what}: {url}"
    if not isinstance(data, dict):
        raise BackendError(f"{what} answered JSON that is not an object ({type(data).__name__})")
    if "error" in data and "choices" not in data:
        raise BackendError(f"{what} answered an error: {str(data['error'])[:300]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BackendError(f"{what} answered JSON without a list of choices (keys: {sorted(data)[:10]})")
    if len(choices) != job.count:
        raise BackendError(
            f"{what} answered {len(choices)} choice(s) for n={job.count}"
            + ("; this server ignores n: use -B n_per_request=1" if job.count > 1 else "")
        )
    usage = data.get("usage")
    total = _int(usage.get("completion_tokens")) if isinstance(usage, dict) else None
    if total is None:
        raise BackendError(
            f"{what} answered without usage.completion_tokens (usage: {str(usage)[:200]}); castillo counts tokens "
            "with the server's own usage and cannot measure a server that omits it"
        )
    prompt_tokens = _int(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    pid = job.request.prompt.prompt_id
    if prompt_tokens is not None and pid not in stats.prompt_tokens:
        stats.prompt_tokens[pid] = prompt_tokens
    ordered = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)
    if job.count == 1:
        counts, source = [total], "usage"
    else:
        found = [_choice_tokens(c) for c in ordered]
        if any(n is None for n, _ in found):
            raise BackendError(
                f"{what} gives no per-choice token counts (choice usage or token_ids), so the lengths of "
                f"{job.count} choices cannot be told apart from one total; use -B n_per_request=1"
            )
        counts = [n for n, _ in found]  # type: ignore[misc]
        source = found[0][1]
        if sum(counts) != total:  # type: ignore[arg-type]
            raise BackendError(
                f"{what}: the per-choice counts ({source}) sum to {sum(counts)} but usage.completion_tokens "
                f"is {total}; the server counts differently per choice: use -B n_per_request=1"  # type: ignore[arg-type]
            )
    out = []
    cap = shape.max_new_tokens
    for j, (choice, count) in enumerate(zip(ordered, counts, strict=True)):
        raw = choice.get("finish_reason")
        if raw == "length":
            reason = "length"
            if count < cap:  # type: ignore[operator]
                # Cut before the cap: the server ran out of context (llama.cpp lowers
                # max_tokens to what is left of n_ctx), so the sample's length is not the model's.
                raise BackendError(context_message(job, server or url, cap, prompt_tokens, generated=count))
        else:
            reason = "stop"
            if raw not in NORMAL_STOPS:
                key = str(raw)
                stats.unexpected_finish[key] = stats.unexpected_finish.get(key, 0) + 1
                if stats.unexpected_finish[key] == 1:
                    log.warning(
                        "backend openai: %s: finish_reason %r is not one castillo knows; stored as 'stop' "
                        "(further ones are counted, not logged)",
                        job.what,
                        raw,
                    )
            elif shape.count_end_token:
                count = min(count + 1, cap)  # type: ignore[operator]
        if count > cap:  # type: ignore[operator]
            # The server generated past max_tokens (llama-cpp-python finishes a split UTF-8
            # character first): the model did not stop within the cap, so it is capped.
            stats.over_cap += 1
            if stats.over_cap == 1:
                log.warning(
                    "backend openai: %s: the server reported %d completion tokens for max_tokens=%d; stored as %d "
                    "with finish_reason 'length' (further ones are counted, not logged)",
                    job.what,
                    count,
                    cap,
                    cap,
                )
            count, reason = cap, "length"
        out.append(
            Completion(
                sample_index=job.first + j,
                seed=job.request.seed + job.first + j,
                output_tokens=count,
                finish_reason=reason,
                text=_text(choice, shape.chat),
                latency=latency,
            )
        )
    return out


def _text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
    else:
        content = choice.get("text")
    return content if isinstance(content, str) else ""


class Runner:
    """Drives one ``generate`` call inside the backend's event loop."""

    def __init__(
        self, session: Session, shape: RequestShape, requests: Sequence[GenerationRequest], stats: Stats
    ) -> None:
        self.session = session
        self.shape = shape
        self.stats = stats
        self.slots = {r.key: _Slot(r, [None] * r.n, missing=r.n) for r in requests}
        self.jobs = jobs_for(requests, shape.n_per_request)
        self.results: asyncio.Queue[PromptResult | None] = asyncio.Queue()
        self.error: BaseException | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.supervisor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.workers = [asyncio.ensure_future(self._work()) for _ in range(self.session.concurrency)]
        self.supervisor = asyncio.ensure_future(self._supervise())

    async def next_result(self) -> PromptResult | None:
        """The next finished prompt; None when all are done; raises the first fatal error."""
        item = await self.results.get()
        if item is None and self.error is not None:
            raise self.error
        return item

    async def stop(self) -> None:
        """Cancel whatever still runs (the engine stopped early, or an error)."""
        pending = [t for t in [*self.workers, self.supervisor] if t is not None and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _supervise(self) -> None:
        await asyncio.gather(*self.workers, return_exceptions=True)
        await self.results.put(None)

    async def _work(self) -> None:
        while self.error is None:
            job = next(self.jobs, None)
            if job is None:
                return
            try:
                await self._run(job)
            except Exception as exc:  # noqa: BLE001 - held, then raised by next_result after the flush
                if self.error is None:
                    self.error = exc
                return

    async def _run(self, job: _Job) -> None:
        slot = self.slots[job.request.key]
        if slot.started is None:
            slot.started = time.monotonic()
        body = request_body(self.shape, job)
        started = time.monotonic()
        server = self.session.public_base
        try:
            data = await self.session.request_json("POST", self.shape.path, body, job.what)
        except ContextOverflow as exc:
            known = self.stats.prompt_tokens.get(job.request.prompt.prompt_id)
            said = f"HTTP {exc.status}{exc.detail}"
            raise BackendError(context_message(job, server, self.shape.max_new_tokens, known, said=said)) from None
        latency = time.monotonic() - started
        self.stats.requests += 1
        url = self.session.public(self.shape.path)
        completions = parse_completions(data, job, self.shape, latency, self.stats, url, server)
        for c in completions:
            slot.completions[c.sample_index] = c
        slot.missing -= len(completions)
        if slot.missing == 0:
            gen_time = time.monotonic() - slot.started
            done = tuple(c for c in slot.completions if c is not None)
            input_size = self.stats.prompt_tokens.get(job.request.prompt.prompt_id)
            await self.results.put(
                PromptResult(key=job.request.key, completions=done, gen_time=gen_time, input_size=input_size)
            )
