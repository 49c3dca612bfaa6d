"""A thin layer over llama-cpp-python's low-level (ctypes) API.

The high-level ``llama_cpp.Llama`` object keeps one sequence, so it cannot decode a
prompt's N samples as parallel sequences; this module wraps the few C calls castillo
needs: load a model, tokenize and render prompts, a context with ``n_seq_max`` sequences
and a unified KV cache (so copied prompt cells are shared, not duplicated), batches, and
decode errors turned into messages a user can act on. Importing it imports llama_cpp,
so only ``open``/``generate`` import it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np

from castillo_core import BackendError

log = logging.getLogger(__name__)

_BACKEND_READY = False


def _init_backend(verbose: bool) -> None:
    """Initialise llama.cpp once, and keep its load-time chatter off stderr unless asked.

    llama-cpp-python prints every llama.cpp log line while its logger's level is unset,
    which would bury castillo's own progress display.
    """
    global _BACKEND_READY
    cpp_logger = logging.getLogger("llama-cpp-python")
    if verbose:
        cpp_logger.setLevel(logging.DEBUG)
    elif cpp_logger.level == logging.NOTSET:
        cpp_logger.setLevel(logging.ERROR)
    if not _BACKEND_READY:
        L.llama_backend_init()
        _BACKEND_READY = True


def library_version() -> str:
    return str(getattr(L, "__version__", "?"))


def default_threads() -> int:
    """The cores this process may use (affinity-aware: containers often get fewer)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def fingerprint(path: Path) -> str:
    """A cheap identity of a GGUF file: its size and a hash of its first and last MiB.

    Hashing a whole 8 GB file would take longer than many runs; head and tail cover the
    metadata and the last tensors, which differ between quantizations and fine-tunes.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read(1 << 20))
    return f"gguf-{digest.hexdigest()[:16]}"


class Model:
    """A loaded GGUF model and its vocabulary."""

    def __init__(self, path: Path, n_gpu_layers: int, verbose: bool = False) -> None:
        _init_backend(verbose)
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        handle = L.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not handle:
            raise BackendError(f"backend llamacpp: llama.cpp could not load {path} (not a GGUF model it supports?)")
        self.path = path
        self.handle = handle
        self.vocab = L.llama_model_get_vocab(handle)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self.eos = int(L.llama_vocab_eos(self.vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.n_ctx_train = int(L.llama_model_n_ctx_train(handle))
        self.n_params = int(L.llama_model_n_params(handle))
        # End-of-generation ids as a set: one ctypes call per vocab entry once, instead
        # of one per generated token.
        self.eog = frozenset(t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self.vocab, t))
        self._text_buf = ctypes.create_string_buffer(1 << 16)

    def close(self) -> None:
        if self.handle:
            L.llama_model_free(self.handle)
            self.handle = None

    # -- metadata ----------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = L.llama_model_meta_val_str(self.handle, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(self.handle, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        L.llama_model_desc(self.handle, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        raw = L.llama_model_chat_template(self.handle, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = L.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    # -- text <-> tokens ---------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of already-rendered text: special tokens parsed, none added.

        A rendered chat template already holds every special token the model needs, so
        tokenizing it "with special tokens" again is how a second BOS sneaks in; the
        caller adds BOS itself, only when the model wants one and the text lacks it.
        """
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (L.llama_token * capacity)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, True)
        if n < 0:
            capacity = -n
            buf = (L.llama_token * capacity)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, True)
        if n < 0:
            raise BackendError(f"backend llamacpp: could not tokenize a prompt of {len(data)} bytes")
        return list(buf[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of generated ids; control tokens render as nothing, as a chat UI shows them."""
        if not tokens:
            return ""
        arr = (L.llama_token * len(tokens))(*tokens)
        buf = self._text_buf
        n = L.llama_detokenize(self.vocab, arr, len(tokens), buf, len(buf), False, False)
        if n < 0:
            self._text_buf = buf = ctypes.create_string_buffer(-n + 16)
            n = L.llama_detokenize(self.vocab, arr, len(tokens), buf, len(buf), False, False)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")


def render_template(template: str, messages: list[dict[str, str]], bos: str, eos: str) -> str:
    """Render a GGUF's Jinja chat template the way transformers' apply_chat_template does.

    llama.cpp's own ``llama_chat_apply_template`` only recognises template families by
    heuristics and drops their details (SmolLM2's default system prompt, for one); the
    transformers and vLLM backends render the Jinja text itself, so we do too.
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def strftime_now(fmt: str) -> str:
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
        )
    except TemplateError as exc:
        raise BackendError(f"backend llamacpp: the chat template failed on a prompt: {exc}") from exc


class Batch:
    """A llama_batch with numpy views on its arrays (filled per step without ctypes loops)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = L.llama_batch_init(capacity, 0, 1)
        self.token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        self.n_seq_id[:] = 1
        self._seq = self.raw.seq_id
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token; returns its index in the batch (where its logits will be)."""
        i = self.n
        self.token[i] = token
        self.pos[i] = pos
        self._seq[i][0] = seq
        self.logits[i] = logits
        self.n = i + 1
        return i

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def free(self) -> None:
        if self.raw is not None:
            L.llama_batch_free(self.raw)
            self.raw = None


class Context:
    """A llama.cpp context with ``n_seq_max`` sequences over one unified KV cache."""

    def __init__(self, model: Model, n_ctx: int, n_seq_max: int, n_batch: int, n_threads: int) -> None:
        if n_seq_max > L.llama_max_parallel_sequences():
            raise BackendError(
                f"backend llamacpp: {n_seq_max} sequences asked, llama.cpp allows "
                f"{L.llama_max_parallel_sequences()}; lower n_parallel"
            )
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True  # a prompt's cells are shared by its N sequences, stored once
        params.no_perf = False  # the token counters of llama_perf_context back our own counts
        handle = L.llama_init_from_model(model.handle, params)
        if not handle:
            raise BackendError(
                f"backend llamacpp: llama.cpp could not create a context of {n_ctx} tokens x {n_seq_max} sequences "
                f"(out of memory?); lower n_ctx or n_parallel"
            )
        self.handle = handle
        self.model = model
        self.n_ctx = int(L.llama_n_ctx(handle))
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.memory = L.llama_get_memory(handle)

    def close(self) -> None:
        if self.handle:
            L.llama_free(self.handle)
            self.handle = None

    def decode(self, batch: Batch) -> None:
        """Decode a batch, turning llama.cpp's return codes into errors (never a silent stop)."""
        batch.raw.n_tokens = batch.n
        rc = L.llama_decode(self.handle, batch.raw)
        if rc == 0:
            return
        if rc == 1:
            raise BackendError(
                f"backend llamacpp: llama.cpp found no room in the KV cache for a batch of {batch.n} tokens "
                f"(n_ctx={self.n_ctx} shared by up to {self.n_seq_max} sequences). Raise n_ctx "
                f"(-B n_ctx=...) or lower n_parallel; nothing was stored for the unfinished prompts."
            )
        if rc == 2:
            raise BackendError("backend llamacpp: llama_decode was aborted")
        raise BackendError(f"backend llamacpp: llama_decode failed with code {rc} on a batch of {batch.n} tokens")

    def seq_cp(self, src: int, dst: int) -> None:
        L.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def seq_rm(self, seq: int) -> None:
        L.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def clear(self) -> None:
        L.llama_memory_clear(self.memory, True)

    def tokens_decoded(self) -> int:
        """Tokens llama.cpp evaluated in this context (its own counters, prompt + generation)."""
        perf = L.llama_perf_context(self.handle)
        return int(perf.n_p_eval) + int(perf.n_eval)


class Sampler:
    """One sequence's sampler chain: temperature before top-p, as transformers and vLLM do.

    llama.cpp's default chain (and ``create_completion``) applies top-k/top-p/min-p
    before temperature and turns min-p on at 0.05; castillo's backends must agree on
    what "temperature 0.7, top-p 0.9" means, so the chain is built here explicitly:
    repetition penalty -> temperature -> top-k -> top-p -> min-p -> seeded draw.
    """

    def __init__(self, settings: Any, seed: int, prompt_tokens: Sequence[int], max_tokens: int, n_vocab: int) -> None:
        params = L.llama_sampler_chain_default_params()
        chain = L.llama_sampler_chain_init(params)
        self.handle = chain
        if settings.repetition_penalty != 1.0:
            # last_n covers the whole sequence: llama.cpp clamps -1 to 0 (off) here.
            last_n = len(prompt_tokens) + max_tokens
            penalties = L.llama_sampler_init_penalties(n_vocab, last_n, settings.repetition_penalty, 0.0, 0.0)
            L.llama_sampler_chain_add(chain, penalties)
        if settings.temperature <= 0.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(settings.temperature))
            if settings.top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(settings.top_k))
            if settings.top_p < 1.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(settings.top_p, 1))
            if settings.min_p > 0.0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(settings.min_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        if settings.repetition_penalty != 1.0:
            # transformers' repetition penalty counts the prompt's tokens too.
            for token in prompt_tokens:
                L.llama_sampler_accept(chain, token)

    def sample(self, ctx: Context, index: int) -> int:
        """Draw (and accept) a token from the logits at batch index ``index``."""
        return int(L.llama_sampler_sample(self.handle, ctx.handle, index))

    def free(self) -> None:
        if self.handle:
            L.llama_sampler_free(self.handle)
            self.handle = None


def system_info() -> str:
    raw = L.llama_print_system_info()
    return raw.decode("utf-8", errors="replace").strip(" |") if raw else ""


def supports_gpu() -> bool:
    return bool(L.llama_supports_gpu_offload())
