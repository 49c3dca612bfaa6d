"""Batched sampling: each prompt's N samples as parallel llama.cpp sequences.

How a prompt flows through one context:

1. *Prefill.* All but the prompt's last token are decoded once into a "holder"
   sequence (chunked across steps when long), no logits asked.
2. *Start.* When a slot is free, a sample copies the holder's cells into its slot
   (``llama_memory_seq_cp``: in a unified KV cache the cells are shared, not
   duplicated) and decodes the prompt's last token itself, which gives it its own
   logits row to draw its first token from. So the prompt is evaluated once, plus one
   token per sample, instead of N times.
3. *Decode.* Every step decodes one token per running sequence in one batch; each
   sequence draws from its own sampler chain, seeded ``request.seed + sample_index``.
4. *Refill.* A finished sequence frees its slot, which the next step hands to a waiting
   sample of the same or the next prompt. Prompts are prefilled ahead (while fewer
   samples wait than there are slots), so a freed slot never waits for a prefill and
   the batch stays full until the work runs out.

*A shared prefix is evaluated once per call.* Prompts rendered with one chat template start
with the same tokens (the system prompt, a corpus's instruction: 46 tokens of a HumanEval
prompt's ~160 for SmolLM2). Their longest common prefix is decoded once into a sequence of
its own and copied into each prompt's holder, whose prefill starts after it. On a CPU a
prefill token costs nearly as much as a generated one, so this is work removed, not moved.

*Deterministic mode* (``deterministic=True``): the same loop, one prompt at a time, no prefix
shared between prompts. Each prompt runs alone in a cleared KV cache, so its prefill, the
batches its samples decode in and the cells they occupy depend on that prompt (and the
options) only, never on which prompts came before it or were already stored: a resumed run is bit-identical to an
uninterrupted one. The default mode lets a prompt share batches and cache cells with its
neighbours (prefilled ahead, slots refilled by the next prompt), which is faster but makes
its logits round differently when the neighbours change (docs/backends/llamacpp.md).

KV memory is reserved, not hoped for: a prompt reserves its prefix, a running sample
``max_new_tokens`` cells. A prompt or sample that does not fit waits for others to
finish (a smaller batch), and a prompt that cannot fit even alone is refused up front
with the numbers, so ``llama_decode`` never runs out of room mid-run (if it ever does,
that is an error too, never a silent stop).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from castillo_core import BackendError, Completion, FinishReason, GenerationRequest, PromptResult, SamplingSettings
from castillo_llamacpp._llama import Batch, Context, Model, Sampler

MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth a sequence


@dataclass
class _Job:
    """One request in flight: its prompt tokens, its holder sequence, its samples."""

    request: GenerationRequest
    tokens: Sequence[int]
    holder: int | None
    t0: float
    prefilled: int = 0
    shared: int = 0
    started: int = 0
    finished: int = 0
    completions: list[Completion | None] = field(default_factory=list)

    @property
    def prefix_len(self) -> int:
        return len(self.tokens) - 1

    @property
    def ready(self) -> bool:
        return self.prefilled >= self.prefix_len

    @property
    def unstarted(self) -> int:
        return self.request.n - self.started


@dataclass
class _Seq:
    """One running sample: its slot (sequence id), sampler, position and tokens so far."""

    job: _Job
    index: int
    slot: int
    sampler: Sampler | None
    pos: int
    t0: float
    out: int = -1
    pending: int = -1
    generated: list[int] = field(default_factory=list)


@dataclass
class Stats:
    """Where the time went, and what was evaluated (the benchmark and the tests read it)."""

    steps: int = 0
    decode_s: float = 0.0
    sample_s: float = 0.0
    prompt_tokens: int = 0
    shared_prefix: int = 0
    generated: int = 0
    batch_tokens: int = 0
    running_sum: int = 0
    prompts: int = 0

    @property
    def mean_running(self) -> float:
        return self.running_sum / self.steps if self.steps else 0.0


class BatchedGenerator:
    """Runs requests through one context with ``n_parallel`` sample slots."""

    def __init__(
        self, model: Model, ctx: Context, n_parallel: int, n_holders: int, deterministic: bool = False
    ) -> None:
        if ctx.n_seq_max < n_parallel + n_holders:
            raise ValueError("context has fewer sequences than slots + holders")
        self.model = model
        self.ctx = ctx
        self.n_parallel = n_parallel
        self.n_holders = n_holders
        self.deterministic = deterministic
        # The sequence that holds the prompts' common prefix (when the context has one more).
        self.shared_seq = n_parallel + n_holders if ctx.n_seq_max > n_parallel + n_holders else None
        self.stats = Stats()
        self._settings: SamplingSettings | None = None
        self._max_new = 0

    # -- hooks (the benchmark's no-sampling ceiling overrides them) ---------------------------

    def new_sampler(self, job: _Job, index: int) -> Sampler | None:
        assert self._settings is not None
        seed = job.request.seed + index
        return Sampler(self._settings, seed, job.tokens, self._max_new, self.model.n_vocab)

    def pick(self, seq: _Seq) -> int:
        assert seq.sampler is not None
        return seq.sampler.sample(self.ctx, seq.out)

    def finish_reason(self, seq: _Seq, token: int) -> FinishReason | None:
        if token in self.model.eog:
            return "stop"
        if len(seq.generated) >= self._max_new:
            return "length"
        return None

    # -- the loop --------------------------------------------------------------------------

    def check_fits(self, requests: Sequence[GenerationRequest], max_new_tokens: int) -> None:
        """Refuse, before any work, a prompt that cannot fit in the context even alone.

        In the deterministic mode a prompt must also fit with all the samples it runs at once
        (``min(n, n_parallel)``): a context too small to hold them would shrink its batches,
        so ``n_ctx`` would change the numbers; refused instead, so it never does.
        """
        budget = self.ctx.n_ctx
        for request in requests:
            tokens = request.rendered.payload
            if not tokens:
                raise BackendError(f"backend llamacpp: prompt {request.prompt.prompt_id} renders to no tokens")
            need = len(tokens) + max_new_tokens
            if need > budget:
                raise BackendError(
                    f"backend llamacpp: prompt {request.prompt.prompt_id} has {len(tokens)} tokens; with "
                    f"max_new_tokens={max_new_tokens} one sample needs {need} KV cells but n_ctx is {budget}. "
                    f"Raise n_ctx (-B n_ctx={need}) or lower --max-new-tokens / --max-prompt-tokens."
                )
            rows = min(request.n, self.n_parallel)
            need = len(tokens) - 1 + rows * max_new_tokens
            if self.deterministic and need > budget:
                raise BackendError(
                    f"backend llamacpp: deterministic mode runs {rows} samples of prompt "
                    f"{request.prompt.prompt_id} ({len(tokens)} tokens) at once, which needs {need} KV cells "
                    f"with max_new_tokens={max_new_tokens}, but n_ctx is {budget}. Raise n_ctx (-B n_ctx={need}) "
                    f"or leave it unset (sized to fit)."
                )

    def run(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, max_new_tokens: int
    ) -> Iterator[PromptResult]:
        """Yield each request's result as soon as its N samples are done."""
        self._settings = settings
        self._max_new = max_new_tokens
        self.check_fits(requests, max_new_tokens)
        if not self.deterministic:
            yield from self._run(requests, max_new_tokens)
            return
        for request in requests:  # one prompt per wave, each in a cleared cache
            yield from self._run((request,), max_new_tokens)

    def _run(self, requests: Sequence[GenerationRequest], max_new_tokens: int) -> Iterator[PromptResult]:
        ctx = self.ctx
        # Whatever an earlier call left (it is cleared on the way out too): every call starts
        # from an empty cache, so where its cells go depends on this call alone.
        ctx.clear()
        budget = ctx.n_ctx
        batch = Batch(ctx.n_batch)
        queue: deque[GenerationRequest] = deque(requests)
        waiting: list[_Job] = []  # admitted jobs with samples not yet started
        running: list[_Seq] = []
        free_slots = list(range(self.n_parallel - 1, -1, -1))
        free_holders = list(range(self.n_parallel + self.n_holders - 1, self.n_parallel - 1, -1))
        reserved = 0
        stats = self.stats
        try:
            shared = self._share_prefix(requests, batch)
            reserved += shared
            while queue or waiting or running:
                batch.clear()
                for seq in running:
                    seq.out = batch.add(seq.pending, seq.pos, seq.slot, True)
                    seq.pos += 1
                # Start waiting samples in freed slots, oldest prompt first.
                for job in waiting:
                    if not job.ready:
                        continue
                    while job.unstarted and free_slots and reserved + max_new_tokens <= budget:
                        slot = free_slots.pop()
                        if job.holder is not None:
                            ctx.seq_cp(job.holder, slot)
                        index = job.started
                        seq = _Seq(
                            job, index, slot, self.new_sampler(job, index), job.prefix_len + 1, time.perf_counter()
                        )
                        seq.out = batch.add(job.tokens[-1], job.prefix_len, slot, True)
                        stats.prompt_tokens += 1
                        running.append(seq)
                        job.started += 1
                        reserved += max_new_tokens
                    if not job.unstarted and job.holder is not None:
                        ctx.seq_rm(job.holder)
                        free_holders.append(job.holder)
                        job.holder = None
                waiting = [job for job in waiting if job.unstarted]
                # Prefill ahead: continue unfinished prefixes, then admit prompts while fewer
                # samples wait than there are slots.
                for job in waiting:
                    self._prefill(job, batch)
                while queue and batch.room > 0 and sum(j.unstarted for j in waiting) < self.n_parallel:
                    request = queue[0]
                    tokens = request.rendered.payload
                    prefix = len(tokens) - 1
                    if prefix > 0 and not free_holders:
                        break
                    # Its own cells: the shared prefix is reserved once (shared <= every prefix).
                    if reserved + prefix - shared + max_new_tokens > budget:
                        break
                    queue.popleft()
                    holder = free_holders.pop() if prefix > 0 else None
                    job = _Job(request, tokens, holder, time.perf_counter(), completions=[None] * request.n)
                    if shared and holder is not None and self.shared_seq is not None:
                        ctx.seq_cp(self.shared_seq, holder)  # cells shared, not copied: unified KV cache
                        job.prefilled = job.shared = shared
                    reserved += prefix - job.shared
                    stats.prompts += 1
                    waiting.append(job)
                    self._prefill(job, batch)
                if batch.n == 0:
                    raise BackendError(
                        f"backend llamacpp: the scheduler could place no token (n_ctx={budget}, "
                        f"{reserved} cells reserved); raise n_ctx"
                    )
                t = time.perf_counter()
                ctx.decode(batch)
                t2 = time.perf_counter()
                stats.decode_s += t2 - t
                stats.steps += 1
                stats.batch_tokens += batch.n
                stats.running_sum += len(running)
                still: list[_Seq] = []
                done: list[_Job] = []
                for seq in running:
                    token = self.pick(seq)
                    seq.generated.append(token)
                    reason = self.finish_reason(seq, token)
                    if reason is None:
                        seq.pending = token
                        still.append(seq)
                        continue
                    self._complete(seq, reason)
                    free_slots.append(seq.slot)
                    reserved -= max_new_tokens
                    job = seq.job
                    job.finished += 1
                    if job.finished == job.request.n:
                        reserved -= job.prefix_len - job.shared
                        done.append(job)
                running = still
                stats.sample_s += time.perf_counter() - t2
                for job in done:
                    yield PromptResult(
                        key=job.request.key,
                        completions=tuple(c for c in job.completions if c is not None),
                        gen_time=time.perf_counter() - job.t0,
                    )
        finally:
            for seq in running:
                if seq.sampler is not None:
                    seq.sampler.free()
            batch.free()
            ctx.clear()

    def _share_prefix(self, requests: Sequence[GenerationRequest], batch: Batch) -> int:
        """Decode the prompts' longest common prefix once into the shared sequence; its length.

        Only between prompts of one call in the default mode: the deterministic mode keeps
        every prompt's arithmetic independent of the others. Capped one token short of the
        shortest prefix, so every prompt still prefills (and every sample decodes) its own
        last token.
        """
        if self.deterministic or self.shared_seq is None or len(requests) < 2:
            return 0
        payloads = [request.rendered.payload for request in requests]
        limit = min(len(tokens) for tokens in payloads) - 1
        first = payloads[0]
        length = 0
        while length < limit and all(tokens[length] == first[length] for tokens in payloads):
            length += 1
        if length < MIN_SHARED_PREFIX:
            return 0
        for start in range(0, length, batch.capacity):
            batch.clear()
            for pos in range(start, min(length, start + batch.capacity)):
                batch.add(first[pos], pos, self.shared_seq, False)
            self.ctx.decode(batch)
        self.stats.prompt_tokens += length
        self.stats.shared_prefix = length
        return length

    def _prefill(self, job: _Job, batch: Batch) -> None:
        """Add as much of the job's prefix (all but the last token) as the batch has room for."""
        if job.holder is None:
            return
        end = min(job.prefix_len, job.prefilled + batch.room)
        for pos in range(job.prefilled, end):
            batch.add(job.tokens[pos], pos, job.holder, False)
        self.stats.prompt_tokens += end - job.prefilled
        job.prefilled = end

    def _complete(self, seq: _Seq, reason: FinishReason) -> None:
        """Turn a finished sequence into a Completion and give its slot back."""
        self.ctx.seq_rm(seq.slot)
        if seq.sampler is not None:
            seq.sampler.free()
            seq.sampler = None
        tokens = seq.generated
        text_tokens = tokens[:-1] if reason == "stop" else tokens
        self.stats.generated += len(tokens)
        seq.job.completions[seq.index] = Completion(
            sample_index=seq.index,
            seed=seq.job.request.seed + seq.index,
            output_tokens=len(tokens),
            finish_reason=reason,
            text=self.model.detokenize(text_tokens),
            latency=time.perf_counter() - seq.t0,
        )
