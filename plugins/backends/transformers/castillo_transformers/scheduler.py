"""Continuous batching: a hand-written decode loop over a slot KV cache.

Why not ``model.generate`` on padded batches: a static batch keeps every row until its
longest member stops, so on length distributions (what castillo measures) a third of
the slots or more decode padding. Here a row that stops is refilled at once with the
next sample waiting, so every decode step is useful work.

How it works:
- Each prompt is prefilled alone (one row, no padding: its prompt cache does not depend
  on any other prompt), once for all its ``n`` samples; each sample draws its first token
  from the prefill logits with its own uniform stream (see :mod:`.sampling`).
- The batch shares one time axis of ``width`` cache columns; row ``r`` holds its
  ``lens[r]`` valid keys/values right-aligned in the last columns, the rest is masked by
  an explicit 4-D boolean attention mask. Positions are per row (``position_ids``), so
  RoPE sees each sequence exactly as if it were alone.
- A new sample is placed into a freed row by copying its prompt's keys/values into the
  row's last columns; when no sample waits, the last row moves into the hole so the
  batch stays dense. Columns no live row needs are dropped from the left.
- Out of memory: the samples in flight go back to the queue (they restart from token 0
  and, their random streams being fixed, produce the same tokens), the row limit is
  halved and the event is recorded. ``max_new_tokens`` is never lowered.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from castillo_transformers.sampling import Sampler, uniform_stream

log = logging.getLogger(__name__)


class _SlotLayer(DynamicLayer):
    """One decoder layer's view of the :class:`SlotCache` (writes at the shared column)."""

    def __init__(self, owner: SlotCache, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.owner.write(self.index, key_states, value_states)

    def get_seq_length(self) -> int:
        return self.owner.width

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.width + query_length, 0


class SlotCache(Cache):
    """Preallocated keys/values of ``rows`` sequences that share one right-aligned time axis."""

    def __init__(
        self, n_layers: int, kv_heads: int, head_dim: int, max_rows: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__(layers=[_SlotLayer(self, i) for i in range(n_layers)])
        self.shape = (max_rows, kv_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.start = self.end = 0  # columns [start, end) hold data
        self.rows = 0  # rows [0, rows) are live
        self._allocate(64, 0)

    @property
    def width(self) -> int:
        return self.end - self.start

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def _allocate(self, columns: int, left: int) -> None:
        """Reallocate with ``columns`` columns, the current data starting at column ``left``."""
        rows, heads, dim = self.shape
        width = self.width
        keys, values = [], []
        for i in range(len(self.layers)):
            k = torch.zeros(rows, heads, columns, dim, dtype=self.dtype, device=self.device)
            v = torch.zeros_like(k)
            if self.keys and width:
                k[: self.rows, :, left : left + width] = self.keys[i][: self.rows, :, self.start : self.end]
                v[: self.rows, :, left : left + width] = self.values[i][: self.rows, :, self.start : self.end]
            keys.append(k)
            values.append(v)
        self.keys, self.values = keys, values
        self.start, self.end = left, left + width

    def reserve(self, width: int) -> None:
        """Make room for ``width`` valid columns before ``end`` and one free column after it."""
        missing = width - self.width
        if missing > 0:
            if self.start >= missing:
                self.start -= missing  # stale columns on the left: masked for the other rows
            else:
                self._allocate(max(2 * (width + 1), 64), missing)
                self.start = 0
        if self.end + 1 > self.capacity:
            self._allocate(max(2 * (self.width + 1), 64), 0)

    def reset(self, max_rows: int) -> None:
        """Forget every row; reallocate for ``max_rows`` rows (smaller after out of memory)."""
        self.shape = (max_rows, *self.shape[1:])
        self.keys, self.values = [], []
        self.start = self.end = self.rows = 0
        self._allocate(64, 0)

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one step's keys/values at column ``end``; return this layer's visible window."""
        n, q = key.shape[0], key.shape[2]
        self.keys[layer][:n, :, self.end : self.end + q] = key
        self.values[layer][:n, :, self.end : self.end + q] = value
        return self.keys[layer][:n, :, self.start : self.end + q], self.values[layer][:n, :, self.start : self.end + q]

    def place(self, row: int, prompt: Sequence[tuple[torch.Tensor, torch.Tensor]], length: int) -> None:
        """Copy a prefilled prompt's keys/values into the last ``length`` columns of ``row``."""
        for i, (k, v) in enumerate(prompt):
            self.keys[i][row, :, self.end - length : self.end] = k[0]
            self.values[i][row, :, self.end - length : self.end] = v[0]

    def move(self, source: int, target: int) -> None:
        for i in range(len(self.layers)):
            self.keys[i][target, :, self.start : self.end] = self.keys[i][source, :, self.start : self.end]
            self.values[i][target, :, self.start : self.end] = self.values[i][source, :, self.start : self.end]

    def trim(self, longest: int) -> None:
        """Forget columns that no live row needs (free: only ``start`` moves)."""
        self.start = max(self.start, self.end - longest)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width


@dataclass
class PromptJob:
    """One prompt to sample ``n`` times; sample ``i`` uses ``seed + i``."""

    key: int
    ids: list[int]
    n: int
    seed: int
    prefill: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    logits: torch.Tensor | None = None
    to_start: int = 0
    started: float | None = None
    done: dict[int, SampleOut] = field(default_factory=dict)


@dataclass
class SampleOut:
    """A finished sample: its generated ids (stop id included) and why it ended."""

    index: int
    seed: int
    tokens: list[int]
    finish_reason: str
    latency: float


@dataclass
class _Live:
    prompt: PromptJob
    index: int
    tokens: list[int]
    started: float


@dataclass
class Stats:
    """What the loop did, for provenance and the benchmark."""

    decode_steps: int = 0
    row_slots: int = 0  # sum over steps of live rows
    attention_columns: int = 0  # sum over steps of rows x visible columns
    valid_columns: int = 0  # of which held a real token
    prefill_tokens: int = 0
    prefills: int = 0
    oom_events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        padded = 1.0 - self.valid_columns / self.attention_columns if self.attention_columns else 0.0
        return {
            "decode_steps": self.decode_steps,
            "row_slots": self.row_slots,
            "prefills": self.prefills,
            "prefill_tokens": self.prefill_tokens,
            "attention_padding_share": round(padded, 4),
            "oom_events": list(self.oom_events),
        }


def is_oom(exc: BaseException) -> bool:
    """An allocation failure (CUDA or CPU) rather than a bug."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class Scheduler:
    """Runs prompts through a model with continuous (or, for comparison, static) batching."""

    def __init__(
        self,
        model: Any,
        sampler: Sampler,
        stop_ids: Sequence[int],
        max_new_tokens: int,
        max_rows: int,
        continuous: bool = True,
        clock: Callable[[], float] = time.monotonic,
        stats: Stats | None = None,
        on_oom: Callable[[str], Exception] | None = None,
    ) -> None:
        self.model = model
        self.sampler = sampler
        self.stop = frozenset(int(i) for i in stop_ids)
        self.max_new = max_new_tokens
        self.max_rows = max(1, max_rows)
        self.continuous = continuous
        self.clock = clock
        self.stats = stats or Stats()
        self.on_oom = on_oom or (lambda message: RuntimeError(message))
        self.device = next(model.parameters()).device
        config = model.config
        if hasattr(config, "get_text_config"):
            config = config.get_text_config(decoder=True)
        self.n_layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.vocab = model.get_output_embeddings().weight.shape[0]
        self.dtype = next(model.parameters()).dtype
        attention = getattr(model.config, "_attn_implementation", None) or "sdpa"
        if attention not in ("sdpa", "eager"):
            raise ValueError(
                f"attention implementation {attention!r} is not supported by the batched cache; use sdpa or eager"
            )
        self.additive_mask = attention == "eager"
        self.stop_tensor = torch.tensor(sorted(self.stop), device=self.device, dtype=torch.long)

    # -- model calls -----------------------------------------------------------------------

    def new_cache(self, max_rows: int) -> SlotCache:
        return SlotCache(self.n_layers, self.kv_heads, self.head_dim, max_rows, self.dtype, self.device)

    def prefill(self, job: PromptJob) -> None:
        ids = torch.tensor([job.ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or out.past_key_values
        job.prefill = [(layer.keys, layer.values) for layer in cache.layers]
        job.logits = out.logits[:, -1, :]
        self.stats.prefills += 1
        self.stats.prefill_tokens += len(job.ids)

    def _cache_keyword(self) -> str:
        """``cache`` in recent transformers 5.x, ``past_key_values`` before it (5.17-5.19 and 4.x)."""
        keyword = getattr(self, "_cache_kw", None)
        if keyword is None:
            parameters = inspect.signature(self.model.forward).parameters
            keyword = self._cache_kw = "cache" if "cache" in parameters else "past_key_values"
        return keyword

    def decode(self, cache: SlotCache, tokens: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        width = cache.width
        columns = torch.arange(width + 1, device=self.device)
        mask = (columns.unsqueeze(0) >= (width - lens).unsqueeze(1))[:, None, None, :]
        if self.additive_mask:  # eager attention adds the mask to the scores
            mask = torch.zeros(mask.shape, dtype=self.dtype, device=self.device).masked_fill_(
                ~mask, torch.finfo(self.dtype).min
            )
        out = self.model(
            input_ids=tokens.unsqueeze(1),
            position_ids=lens.unsqueeze(1),
            attention_mask=mask,
            use_cache=True,
            **{self._cache_keyword(): cache},
        )
        rows = tokens.shape[0]
        self.stats.decode_steps += 1
        self.stats.row_slots += rows
        self.stats.attention_columns += rows * (width + 1)
        self.stats.valid_columns += int(lens.sum()) + rows
        return out.logits[:, -1, :]

    # -- the loop ----------------------------------------------------------------------------

    def run(self, prompts: Sequence[PromptJob]) -> Iterator[tuple[PromptJob, list[SampleOut], float]]:
        """Yield ``(prompt, samples, gen_time)`` as soon as each prompt's samples are all done."""
        with torch.inference_mode():
            yield from _Run(self, prompts).loop()


class _Restart(Exception):
    """Out of memory while starting a sample: the rows in flight were requeued; fill again."""


class _Run:
    """The state of one ``Scheduler.run``: queues, live rows and their per-row tensors."""

    def __init__(self, owner: Scheduler, prompts: Sequence[PromptJob]) -> None:
        self.s = owner
        # Longest prompts first: the cache then rarely grows to the left, and stragglers are short.
        self.waiting = deque(sorted(prompts, key=lambda p: (-len(p.ids), p.key)))
        self.queue: deque[tuple[PromptJob, int]] = deque()
        self.rows_cap = owner.max_rows
        self.cache = owner.new_cache(self.rows_cap)
        self.live: list[_Live | None] = []
        rows, device = self.rows_cap, owner.device
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.lens = torch.zeros(rows, dtype=torch.long, device=device)
        self.steps = torch.zeros(rows, dtype=torch.long)
        self.streams = torch.zeros(rows, owner.max_new, dtype=torch.float64)
        self.seen = (
            torch.zeros(rows, owner.vocab, dtype=torch.bool, device=device) if owner.sampler.uses_history else None
        )
        self.ready: list[tuple[PromptJob, list[SampleOut], float]] = []

    def finish(self, prompt: PromptJob, index: int, ids: list[int], started: float) -> None:
        reason = "stop" if ids[-1] in self.s.stop else "length"
        now = self.s.clock()
        prompt.done[index] = SampleOut(index, prompt.seed + index, ids, reason, now - started)
        if len(prompt.done) == prompt.n:
            samples = [prompt.done[i] for i in range(prompt.n)]
            self.ready.append((prompt, samples, now - (prompt.started or started)))
            prompt.prefill = prompt.logits = None

    def next_sample(self) -> tuple[PromptJob, int] | None:
        if not self.queue and self.waiting:
            prompt = self.waiting.popleft()
            prompt.to_start = prompt.n
            self.queue.extend((prompt, i) for i in range(prompt.n))
        return self.queue.popleft() if self.queue else None

    def start(self, prompt: PromptJob, index: int, row: int) -> bool:
        """Begin sample ``index`` of ``prompt`` in ``row``; False if it ended at its first token."""
        s = self.s
        if prompt.prefill is None:
            if prompt.started is None:
                prompt.started = s.clock()
            try:
                s.prefill(prompt)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                self.queue.appendleft((prompt, index))
                self.drop_live("prefill", minimum=0)
                raise _Restart from None
        began = s.clock()
        kv, logits = prompt.prefill, prompt.logits
        assert kv is not None and logits is not None
        stream = uniform_stream(prompt.seed + index, s.max_new)
        history = None
        if self.seen is not None:
            history = torch.zeros(1, s.vocab, dtype=torch.bool, device=s.device)
            history[0, prompt.ids] = True
        first = int(s.sampler.pick(logits, stream[:1], history)[0])
        prompt.to_start -= 1
        if prompt.to_start == 0:
            prompt.prefill = prompt.logits = None  # every sample of it is under way
        if first in s.stop or s.max_new == 1:
            self.finish(prompt, index, [first], began)
            return False
        width = len(prompt.ids)
        self.cache.reserve(width)
        self.cache.place(row, kv, width)
        self.tokens[row], self.lens[row], self.steps[row] = first, width, 1
        self.streams[row] = stream
        if self.seen is not None and history is not None:
            history[0, first] = True
            self.seen[row] = history[0]
        entry = _Live(prompt, index, [first], began)
        if row == len(self.live):
            self.live.append(entry)
        else:
            self.live[row] = entry
        self.cache.rows = max(self.cache.rows, row + 1)
        return True

    def drop_live(self, during: str, minimum: int) -> None:
        """Out of memory: requeue the samples in flight (they restart identically), halve the rows."""
        in_flight = [entry for entry in self.live if entry is not None]
        rows = len(in_flight)
        if rows <= minimum:
            raise self.s.on_oom(
                f"out of memory during {during} with {rows} sequence(s) in flight (cache width "
                f"{self.cache.width}); use a smaller model, dtype, max_prompt_tokens or max_new_tokens"
            )
        new_cap = max(1, rows // 2) if rows > 1 else 1
        self.s.stats.oom_events.append(
            {"during": during, "rows": rows, "max_rows_now": new_cap, "cache_width": self.cache.width}
        )
        log.warning(
            "out of memory during %s with %d rows; retrying with at most %d rows (recorded)", during, rows, new_cap
        )
        for entry in reversed(in_flight):
            entry.prompt.to_start += 1
            self.queue.appendleft((entry.prompt, entry.index))
        self.live.clear()
        self.rows_cap = new_cap
        self.cache.reset(new_cap)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def fill(self) -> None:
        """Start waiting samples in free rows (in static mode only once the batch is empty)."""
        while True:
            try:
                if not self.s.continuous and self.live:
                    return
                while len(self.live) < self.rows_cap:
                    item = self.next_sample()
                    if item is None:
                        return
                    self.start(item[0], item[1], len(self.live))
                return
            except _Restart:
                continue

    def refill(self, holes: list[int]) -> None:
        """Put waiting samples into the rows that just ended; compact what stays empty."""
        try:
            if self.s.continuous:
                remaining = []
                for row in holes:
                    placed = False
                    while not placed:
                        item = self.next_sample()
                        if item is None:
                            break
                        placed = self.start(item[0], item[1], row)
                    if not placed:
                        remaining.append(row)
                holes = remaining
            self.compact(holes)
        except _Restart:
            pass  # everything in flight went back to the queue
        if any(entry is not None for entry in self.live):
            self.cache.trim(int(self.lens[: len(self.live)].max()))
        else:
            self.live.clear()
            self.cache.reset(self.rows_cap)
            self.fill()

    def compact(self, holes: list[int]) -> None:
        """Fill holes with rows from the end so rows [0, len(live)) stay dense."""
        live, cache = self.live, self.cache
        for hole in sorted(holes, reverse=True):
            last = len(live) - 1
            if hole != last:
                live[hole] = live[last]
                cache.move(last, hole)
                for tensor in (self.tokens, self.lens, self.steps, self.streams, self.seen):
                    if tensor is not None:
                        tensor[hole] = tensor[last]
            live.pop()
        cache.rows = len(live)

    def step(self) -> None:
        """One decode step of every live row; ended rows are recorded, refilled or removed."""
        s, cache = self.s, self.cache
        rows = len(self.live)
        cache.rows = rows
        cache.reserve(cache.width)
        try:
            logits = s.decode(cache, self.tokens[:rows], self.lens[:rows])
        except Exception as exc:
            if not is_oom(exc):
                raise
            self.drop_live("decode", minimum=1)
            self.fill()
            return
        cache.end += 1
        row_ids = torch.arange(rows)
        uniforms = self.streams[row_ids, self.steps[:rows]]
        picked = s.sampler.pick(logits, uniforms, self.seen[:rows] if self.seen is not None else None)
        if self.seen is not None:
            self.seen[row_ids.to(s.device), picked] = True
        self.tokens[:rows] = picked
        self.lens[:rows] += 1
        self.steps[:rows] += 1
        ended = []
        for row, token in enumerate(picked.tolist()):
            entry = self.live[row]
            assert entry is not None
            entry.tokens.append(token)
            if token in s.stop or len(entry.tokens) >= s.max_new:
                ended.append(row)
        if not ended:
            return
        for row in ended:
            entry = self.live[row]
            assert entry is not None
            self.finish(entry.prompt, entry.index, entry.tokens, entry.started)
            self.live[row] = None
        self.refill(ended)

    def loop(self) -> Iterator[tuple[PromptJob, list[SampleOut], float]]:
        self.fill()
        while True:
            yield from self.ready
            self.ready.clear()
            if not self.live:
                return
            self.step()
