"""Running one cell on an opened model: render -> requests -> generate -> validate -> parts.

:class:`CellRunner` is what every executor uses to generate: the local executor in the
``castillo run`` process, a cluster executor's workers in theirs. It writes parts into
the store and never touches the manifest: it returns a :class:`CellResult` (with the
provenance and the backend's report) and the driver records it.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from castillo_core.api.contracts import Backend, ModelInfo
from castillo_core.api.errors import (
    BackendCrashed,
    BackendError,
    BackendUnavailableError,
    CastilloError,
    ConfigError,
)
from castillo_core.api.records import GenerationRequest, Prompt, PromptResult, SamplingSettings
from castillo_core.api.rendering import SOURCE_PROMPT_ID, v1_cut_prompt
from castillo_core.api.requests import build_requests
from castillo_core.engine.metrics import MetricSetting
from castillo_core.engine.plan import Cell
from castillo_core.engine.progress import Progress
from castillo_core.engine.rows import CellContext
from castillo_core.engine.store import Store
from castillo_core.engine.work import CellResult, PendingCell
from castillo_core.engine.writer import PartWriter

log = logging.getLogger(__name__)

_UNCAPPED = 2**31 - 1  # --truncation v1 renders the cut text whole: v1 never cut the templated prompt


@dataclass
class RunnerSettings:
    """How a runner writes: metrics and their options, texts kept or not, flush policy."""

    metrics: list[MetricSetting]
    keep_text: bool = True
    flush_responses: int = 20_000
    flush_seconds: float = 30.0


@dataclass
class OpenedModel:
    """A backend with its model loaded, and what it resolved."""

    backend: Backend
    info: ModelInfo

    def close(self) -> None:
        self.backend.close()


class CellRunner:
    """Generates cells' remaining prompts into a store (see the module docstring)."""

    def __init__(self, store: Store, settings: RunnerSettings, progress: Progress, stop: Any) -> None:
        self.store = store
        self.settings = settings
        self.progress = progress
        self.stop = stop  # anything truthy once the run should stop (a StopFlag, a remote flag)

    def open(self, cell: Cell) -> OpenedModel:
        """Open the cell's model once (the caller closes it); a missing library or a failing load is one line."""
        backend_cls = cell.backend_cls
        missing = backend_cls.missing()
        if missing:
            raise BackendUnavailableError(
                f"backend {backend_cls.name} needs {', '.join(missing)}, which is not installed; "
                f"{backend_cls.install_hint or 'install the backend plugin with its extra'}"
            )
        with _named(f"backend {backend_cls.name} failed to open model {cell.model_id}"):
            backend = backend_cls(cell.spec)
            return OpenedModel(backend, backend.open())

    def run(
        self,
        opened: OpenedModel,
        work: PendingCell,
        on_start: Callable[[CellResult], None] | None = None,
        on_end: Callable[[CellResult], None] | None = None,
    ) -> CellResult:
        """Generate ``work.remaining`` on ``opened``, write them, and say how it went.

        ``on_start`` sees the result before generation starts (its provenance is set: a
        driver records it, so a crash leaves it behind); ``on_end`` sees the final result,
        also when anything fails (the backend's sampling, rendering or generation, a
        metric), after the finished prompts were flushed and before the exception propagates.
        """
        cell, prompt_set = work.cell, work.prompt_set
        result = CellResult(
            cell.label,
            cell.config_hash,
            "running",
            len(prompt_set.prompts),
            work.already,
            rejections=prompt_set.rejections,
            duplicates=prompt_set.duplicates,
        )
        writer: PartWriter | None = None
        try:
            settings, requests = self._prepare(opened, work, result)
            if on_start is not None:
                on_start(result)
            self.progress.start_cell(cell.label, len(prompt_set.prompts), work.already)
            started = time.monotonic()
            writer = self._writer(cell, opened.info, settings, result)
            self._generate(opened.backend, cell, requests, settings, writer)
        except BaseException as exc:
            if writer is not None:
                writer.flush_quietly()
            result.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            result.backend_report = backend_report(opened.backend)
            self.progress.end_cell(cell.label, result.status)
            if on_end is not None:
                on_end(result)
            raise
        result.seconds = time.monotonic() - started
        result.status = "interrupted" if self.stop else "done"
        result.backend_report = backend_report(opened.backend)
        self.progress.end_cell(cell.label, result.status)
        if on_end is not None:
            on_end(result)
        return result

    def _prepare(
        self, opened: OpenedModel, work: PendingCell, result: CellResult
    ) -> tuple[SamplingSettings, list[GenerationRequest]]:
        """The backend's sampling values and rendered requests of the remaining prompts (named on failure).

        Under ``truncation="v1"`` the raw texts are cut first (:meth:`_cut_v1`) and rendered
        without a cap, as CASTILLO v1 did; otherwise the backend cuts the templated prompt.
        """
        cell, gen, name = work.cell, work.cell.generation, work.cell.backend_cls.name
        if gen.counting not in opened.backend.counting_modes:
            raise ConfigError(
                f"backend {name} cannot count output tokens as --counting {gen.counting} asks (it counts: "
                f"{', '.join(opened.backend.counting_modes)}); use --counting exact"
            )
        with _named(f"backend {name} failed to resolve its sampling settings for {cell.label}"):
            settings = opened.backend.sampling(gen)
        result.provenance = provenance(opened.info, settings, cell)
        prompts, cap = work.remaining, gen.max_prompt_tokens
        if gen.truncation == "v1":
            prompts, cap = self._cut_v1(opened.backend, cell, prompts), _UNCAPPED
        with _named(f"backend {name} failed to render the prompts of {cell.label}"):
            rendered = opened.backend.render(prompts, cap)
        if gen.truncation == "v1":
            rendered = [
                r.model_copy(update={"truncated": True}) if SOURCE_PROMPT_ID in p.metadata else r
                for p, r in zip(prompts, rendered, strict=True)
            ]
        requests = build_requests(prompts, rendered, gen, backend=name)
        result.truncated = sum(r.truncated for r in rendered)
        if result.truncated:
            how = (
                "raw text cut to the first {cap} tokens of the model's tokenizer, as CASTILLO v1 did "
                "(flagged in prompt_truncated, the uncut prompt's id in source_prompt_id)"
                if gen.truncation == "v1"
                else "truncated to {cap} tokens (flagged in prompt_truncated)"
            )
            self.progress.message(
                f"{cell.label}: {result.truncated} prompt(s) {how.format(cap=gen.max_prompt_tokens)}", "warning"
            )
        return settings, requests

    def _cut_v1(self, backend: Backend, cell: Cell, prompts: list[Prompt]) -> list[Prompt]:
        """CASTILLO v1's cut: raw texts over the cap become their cut text, with v1's id over it.

        A cut prompt whose new id is stored already (or repeats within the cell: two texts
        that share their first ``max_prompt_tokens`` tokens) is not generated again.
        """
        cap, name = cell.generation.max_prompt_tokens, cell.backend_cls.name
        with _named(f"backend {name} failed to cut the prompts of {cell.label} (--truncation v1)"):
            cuts = backend.cut_prompts([p.prompt_text for p in prompts], cap)
        if len(cuts) != len(prompts):
            raise BackendError(f"backend {name} cut {len(prompts)} prompts into {len(cuts)} texts")
        done = self.store.finished(cell.model, cell.dataset).get(cell.config_hash, set())
        out: list[Prompt] = []
        seen: set[str] = set()
        merged = []
        for prompt, text in zip(prompts, cuts, strict=True):
            if text is not None:
                prompt = v1_cut_prompt(prompt, text)
            if prompt.prompt_id in seen or (text is not None and prompt.prompt_id in done):
                merged.append(prompt.metadata.get(SOURCE_PROMPT_ID, prompt.prompt_id))
                continue
            seen.add(prompt.prompt_id)
            out.append(prompt)
        if merged:
            self.progress.message(
                f"{cell.label}: {len(merged)} prompt(s) cut to the same text as another prompt of the cell, "
                f"generated once (e.g. {merged[0]})",
                "warning",
            )
        return out

    def _writer(self, cell: Cell, info: ModelInfo, settings: SamplingSettings, result: CellResult) -> PartWriter:
        gen = cell.generation
        metrics = [(s, s.instantiate(gen.max_new_tokens, gen.n)) for s in self.settings.metrics]
        ctx = CellContext(
            model=cell.model,
            dataset=cell.dataset,
            backend=cell.backend_cls.name,
            model_revision=info.revision,
            settings=settings,
            n=gen.n,
            max_new_tokens=gen.max_new_tokens,
            max_prompt_tokens=gen.max_prompt_tokens,
            config_hash=cell.config_hash,
            castillo_version=_version(),
            keep_text=self.settings.keep_text,
        )
        metadata = {"config_hash": cell.config_hash, "provenance": result.provenance}
        return PartWriter(
            self.store,
            cell,
            ctx,
            metrics,
            metadata,
            result,
            self.progress,
            self.settings.flush_responses,
            self.settings.flush_seconds,
        )

    def _generate(
        self,
        backend: Backend,
        cell: Cell,
        requests: list[GenerationRequest],
        settings: SamplingSettings,
        writer: PartWriter,
    ) -> None:
        """Stream the backend's results into the writer, validating each against its request."""
        name = cell.backend_cls.name
        by_key = {r.key: r for r in requests}
        returned: set[int] = set()
        stream = iter(backend.generate(requests, settings, cell.generation))
        try:
            while True:
                try:
                    out = next(stream)
                except StopIteration:
                    break
                except CastilloError:
                    raise
                except Exception as exc:  # the backend's own failure: named, one line, resumable
                    pending = next((r.prompt.prompt_id for r in requests if r.key not in returned), "?")
                    raise BackendCrashed(
                        f"backend {name} failed on {cell.label} at prompt {pending} ({len(returned)} of "
                        f"{len(requests)} prompts done): {type(exc).__name__}: {exc}; finished prompts are stored, "
                        "re-run the same command to resume"
                    ) from exc
                request = by_key.get(out.key)
                if request is None or out.key in returned:
                    raise BackendError(f"backend {name} returned unknown or repeated key {out.key}")
                validate_result(out, request, name, cell.generation.max_new_tokens)
                returned.add(out.key)
                writer.add(request, out)
                if self.stop:
                    break
            writer.flush()
            if not self.stop and len(returned) != len(requests):
                missing = [r.prompt.prompt_id for r in requests if r.key not in returned]
                raise BackendError(
                    f"backend {name} returned no result for {len(missing)} prompt(s), e.g. {missing[:3]}"
                )
        finally:
            _close(stream)


@contextmanager
def _named(what: str) -> Iterator[None]:
    """A backend's own exception as one line saying what failed (user errors pass unchanged)."""
    try:
        yield
    except CastilloError:
        raise
    except Exception as exc:
        raise BackendCrashed(f"{what}: {type(exc).__name__}: {exc}") from exc


def validate_result(result: PromptResult, request: GenerationRequest, backend: str, max_new_tokens: int) -> None:
    """Check a backend's result against the contract (one pass: this runs per prompt)."""
    completions = result.completions
    pid = request.prompt.prompt_id
    if len(completions) != request.n:
        raise BackendError(
            f"backend {backend} returned {len(completions)} completions for prompt {pid}, expected {request.n}"
        )
    in_order = True
    for i, c in enumerate(completions):
        tokens = c.output_tokens
        if tokens > max_new_tokens:
            raise BackendError(
                f"backend {backend} reported {tokens} output tokens for prompt {pid}, "
                f"above max_new_tokens={max_new_tokens}"
            )
        if tokens != max_new_tokens and c.finish_reason == "length":
            raise BackendError(
                f"backend {backend} reported finish_reason 'length' with {tokens} output tokens for "
                f"prompt {pid}; 'length' means the cap cut it at exactly {max_new_tokens}"
            )
        in_order = in_order and c.sample_index == i
    if not in_order:
        indices = sorted(c.sample_index for c in completions)
        if indices != list(range(request.n)):
            raise BackendError(f"backend {backend} returned sample indices {indices} for prompt {pid}")


def provenance(info: ModelInfo, settings: SamplingSettings, cell: Cell) -> dict[str, Any]:
    """Where a cell's numbers came from: versions, hardware, model and decoding settings."""
    return {
        "castillo_version": _version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hardware": info.hardware,
        "backend": cell.backend_cls.name,
        "model": info.model,
        "model_revision": info.revision,
        "dtype": info.dtype,
        "chat_template": info.chat_template,
        "library_versions": info.library_versions,
        "backend_info": info.extra,
        "generation": cell.generation.model_dump(),
        "sampling": settings.model_dump(),
    }


def backend_report(backend: Backend) -> dict[str, Any]:
    """The backend's events of the last ``generate``; a failing report must not hide the outcome."""
    try:
        return dict(backend.report())
    except Exception as exc:  # noqa: BLE001 - a report must not hide the run's outcome
        return {"error": f"report() failed: {type(exc).__name__}: {exc}"}


def _close(stream: Any) -> None:
    """Close a backend's result generator so its ``finally`` aborts work in flight."""
    close = getattr(stream, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("closing the backend's result stream failed")


def _version() -> str:
    from castillo_core import __version__

    return __version__
