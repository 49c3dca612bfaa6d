"""The engine: run a grid of cells, resumably, into a store.

Data flows one way: corpus -> prompts -> backend (render, generate) -> completions ->
metrics -> per-prompt aggregation -> store. Finished prompts are buffered and written
as atomic parts every ``flush_responses`` responses or ``flush_seconds`` seconds, so a
crash loses at most that much work and a re-run skips everything already stored.
"""

from __future__ import annotations

import logging
import platform
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from castillo_core.contracts import Backend, Corpus, Metric, MetricContext, ModelInfo
from castillo_core.errors import BackendError, CastilloError, ConfigChangedError, CorpusError, Interrupted
from castillo_core.ids import prompt_seed
from castillo_core.plan import Cell, RunSpec, describe_difference, expand
from castillo_core.plugins import Plugins
from castillo_core.progress import Progress
from castillo_core.records import (
    CorpusSelection,
    GenerationRequest,
    Prompt,
    PromptResult,
    Rejection,
    SamplingSettings,
)
from castillo_core.rows import CellContext, Finished, build_tables, metric_columns
from castillo_core.store import Store

log = logging.getLogger(__name__)


@dataclass
class PromptSet:
    """The prompts of a cell after selection, with what was rejected or merged."""

    prompts: list[Prompt]
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)  # prompt_id -> extra copies


@dataclass
class CellResult:
    label: str
    config_hash: str
    status: str  # done | skipped | interrupted | failed
    total: int = 0
    already_done: int = 0
    written: int = 0
    responses: int = 0
    tokens: int = 0
    seconds: float = 0.0
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    error: str | None = None


@dataclass
class RunSummary:
    out: str
    cells: list[CellResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what failed and why (the Ray executor's retries)

    @property
    def ok(self) -> bool:
        return all(c.status in {"done", "skipped"} for c in self.cells)


class Executor(Protocol):
    """Runs the prepared cells of a run somewhere else (see castillo_core.executors).

    The engine has done the checks and written the run record when ``execute`` is called;
    the executor fills ``summary`` and keeps the manifest current (manifest writes stay
    the driver's: workers only write parts).
    """

    def execute(self, engine: Engine, manifest: dict[str, Any], summary: RunSummary) -> None: ...


@dataclass
class PendingCell:
    """A cell with prompts left to generate: its selection, those left, and how many are stored."""

    cell: Cell
    prompt_set: PromptSet
    remaining: list[Prompt]
    already: int


class StopFlag:
    """Set by SIGINT; the engine checks it between results and flushes before stopping."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested


@contextmanager
def sigint_flushes(flag: StopFlag) -> Iterator[None]:
    """First SIGINT asks the engine to flush and stop; a second one interrupts at once."""
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread: nothing to install
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag.requested = True
        print(
            "\ncastillo: interrupt received, flushing finished prompts (Ctrl-C again to abort)",
            file=sys.stderr,
            flush=True,
        )

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def load_prompts(cell: Cell) -> PromptSet:
    """Read a cell's prompts (see :func:`select_prompts`)."""
    return select_prompts(cell.corpus_cls, cell.selection)


def select_prompts(corpus_cls: type[Corpus], selection: CorpusSelection) -> PromptSet:
    """Read a selection's prompts: rejections kept, duplicates merged and counted, limit applied."""
    corpus = corpus_cls(selection)
    prompts: list[Prompt] = []
    rejections: list[Rejection] = []
    seen: set[str] = set()
    duplicates: Counter[str] = Counter()
    limit = selection.limit
    try:
        for item in corpus.iter_prompts():
            if isinstance(item, Rejection):
                rejections.append(item)
                continue
            if not isinstance(item, Prompt):
                raise CorpusError(f"corpus {corpus_cls.name} yielded {type(item).__name__}, not a Prompt")
            if item.prompt_id in seen:
                duplicates[item.prompt_id] += 1
                continue
            if limit is not None and len(prompts) >= limit:
                break
            seen.add(item.prompt_id)
            prompts.append(item)
    except CastilloError:
        raise
    except Exception as exc:  # a corpus bug must still name the corpus
        raise CorpusError(f"corpus {corpus_cls.name} failed while reading prompts: {exc}") from exc
    if rejections and selection.strict:
        first = rejections[0]
        raise CorpusError(
            f"corpus {corpus_cls.name}: {len(rejections)} record(s) rejected (--strict); first: "
            f"{first.source} record {first.index}: {first.reason}"
        )
    return PromptSet(prompts, rejections, dict(duplicates))


def _provenance(info: ModelInfo, settings: SamplingSettings, cell: Cell) -> dict[str, Any]:
    from castillo_core import __version__

    return {
        "castillo_version": __version__,
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


def _validate(result: PromptResult, request: GenerationRequest, backend: str, max_new_tokens: int) -> None:
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


class Engine:
    """Runs a spec's cells into a store, resuming whatever is already there."""

    def __init__(
        self,
        spec: RunSpec,
        plugins: Plugins,
        progress: Progress | None = None,
        flush_responses: int = 20_000,
        flush_seconds: float = 30.0,
        stop: StopFlag | None = None,
        argv: Sequence[str] | None = None,
        executor: Executor | None = None,
        cells: list[Cell] | None = None,
        metric_classes: list[type[Metric]] | None = None,
        writes_manifest: bool = True,
    ) -> None:
        """``cells``, ``metric_classes`` and ``writes_manifest=False`` build a worker's engine.

        A remote worker runs cells the driver expanded and metrics the driver resolved
        (its own plugin set may differ), and leaves the manifest to the driver.
        """
        self.spec = spec
        self.plugins = plugins
        self.progress = progress or Progress()
        self.flush_responses = flush_responses
        self.flush_seconds = flush_seconds
        self.stop: Any = stop if stop is not None else StopFlag()
        self.argv = list(argv or [])
        self.executor = executor
        self.writes_manifest = writes_manifest
        self.store = Store(spec.out)
        self.cells = cells if cells is not None else expand(spec, plugins)
        self.metric_classes = metric_classes if metric_classes is not None else self._metric_classes()

    def _metric_classes(self) -> list[type[Metric]]:
        if self.spec.metrics is None:
            entries = [e for e in self.plugins.entries("metric") if e.available]
            return [e.cls for e in entries]  # type: ignore[misc]
        return [self.plugins.metric(name) for name in self.spec.metrics]

    # -- checks before any model is loaded ------------------------------------------------

    def check_configs(self, manifest: dict[str, Any]) -> None:
        """Refuse cells whose (model, dataset) the output holds under another config."""
        for cell in self.cells:
            for old_hash, old in manifest["cells"].items():
                same_cell = old.get("model") == cell.model and old.get("dataset") == cell.dataset
                if same_cell and old_hash != cell.config_hash:
                    diff = describe_difference(old.get("config", {}), cell.config)
                    raise ConfigChangedError(
                        f"{self.store.root} already holds {cell.label} under config {old_hash}; this run asks for "
                        f"config {cell.config_hash}. What differs:\n  "
                        + "\n  ".join(diff or ["(unknown)"])
                        + "\nUse a different --out for a different config, or re-run the original command to resume."
                    )
            done = self.store.finished(cell.model, cell.dataset)
            foreign = [h for h in done if h != cell.config_hash]
            if foreign:
                raise ConfigChangedError(
                    f"{self.store.root} holds parts of {cell.label} written under config {foreign[0]} (the manifest "
                    f"does not say how it differs); this run asks for config {cell.config_hash}. Use another --out."
                )

    # -- running -----------------------------------------------------------------------

    def run(self) -> RunSummary:
        report = self.store.open()
        manifest = self.store.read_manifest()
        self.check_configs(manifest)
        for message in report.messages():
            self.progress.message(message, "warning")
        run_record = {
            "started": _now(),
            "argv": self.argv,
            "status": "running",
            "spec": self.spec.model_dump(mode="json"),
        }
        manifest["runs"].append(run_record)
        manifest.setdefault("castillo_version", _version())
        self.store.write_manifest(manifest)
        summary = RunSummary(out=str(self.store.root))
        self.progress.start_run(len(self.cells))
        try:
            if self.executor is not None:
                self.executor.execute(self, manifest, summary)
                if self.stop:
                    raise Interrupted("interrupted; re-run the same command to resume")
            else:
                for group in _by_model(self.cells):
                    self._run_model(group, manifest, summary)
                    if self.stop:
                        raise Interrupted("interrupted; re-run the same command to resume")
            run_record["status"] = "done" if summary.ok else "incomplete"
        except Interrupted:
            run_record["status"] = "interrupted"
            raise
        except BaseException:
            run_record["status"] = "failed"
            raise
        finally:
            run_record["finished"] = _now()
            self.store.write_manifest(manifest)
        return summary

    def _run_model(self, cells: list[Cell], manifest: dict[str, Any], summary: RunSummary) -> None:
        pending = self.prepare(cells, manifest, summary)
        if not pending:
            return
        backend, info = self.open_backend(cells[0])
        try:
            for item in pending:
                result = self._run_cell(
                    backend, info, item.cell, item.prompt_set, item.remaining, item.already, manifest
                )
                summary.cells.append(result)
                if self.stop:
                    return
        finally:
            backend.close()

    def prepare(self, cells: list[Cell], manifest: dict[str, Any], summary: RunSummary) -> list[PendingCell]:
        """Read the cells' prompts and what is stored; finished cells go to ``summary`` as skipped."""
        pending: list[PendingCell] = []
        for cell in cells:
            prompt_set = load_prompts(cell)
            done_ids = self.store.finished(cell.model, cell.dataset).get(cell.config_hash, set())
            remaining = [p for p in prompt_set.prompts if p.prompt_id not in done_ids]
            already = len(prompt_set.prompts) - len(remaining)
            self._announce(cell, prompt_set)
            entry = manifest["cells"].setdefault(cell.config_hash, {})
            entry.update(
                {
                    "model": cell.model,
                    "model_id": cell.model_id,
                    "dataset": cell.dataset,
                    "backend": cell.backend_cls.name,
                    "config": cell.config,
                    "prompts_total": len(prompt_set.prompts),
                    "rejected": len(prompt_set.rejections),
                    "duplicates_merged": sum(prompt_set.duplicates.values()),
                }
            )
            if not remaining:
                entry.update(status="done", prompts_done=len(prompt_set.prompts))
                summary.cells.append(
                    CellResult(
                        cell.label,
                        cell.config_hash,
                        "skipped",
                        len(prompt_set.prompts),
                        already,
                        rejections=prompt_set.rejections,
                        duplicates=prompt_set.duplicates,
                    )
                )
                self.progress.start_cell(cell.label, len(prompt_set.prompts), already)
                self.progress.end_cell(cell.label, "skipped")
                continue
            pending.append(PendingCell(cell, prompt_set, remaining, already))
        self.store.write_manifest(manifest)
        return pending

    def open_backend(self, cell: Cell) -> tuple[Backend, ModelInfo]:
        """Open the cell's model once (the caller closes it); a missing library is a clean error."""
        backend_cls = cell.backend_cls
        missing = backend_cls.missing()
        if missing:
            from castillo_core.errors import BackendUnavailableError

            raise BackendUnavailableError(
                f"backend {backend_cls.name} needs {', '.join(missing)}, which is not installed; "
                f"{backend_cls.install_hint or 'install the backend plugin with its extra'}"
            )
        backend = backend_cls(cell.spec)
        return backend, backend.open()

    def save_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest, unless this engine is a worker's (the driver owns it)."""
        if self.writes_manifest:
            self.store.write_manifest(manifest)

    def _announce(self, cell: Cell, prompt_set: PromptSet) -> None:
        if prompt_set.rejections:
            first = prompt_set.rejections[0]
            self.progress.message(
                f"{cell.label}: {len(prompt_set.rejections)} record(s) rejected (first: {first.source} record "
                f"{first.index}: {first.reason})",
                "warning",
            )
        if prompt_set.duplicates:
            extra = sum(prompt_set.duplicates.values())
            self.progress.message(
                f"{cell.label}: {len(prompt_set.duplicates)} prompt text(s) appear more than once ({extra} extra "
                f"cop{'y' if extra == 1 else 'ies'}); each is generated once",
                "warning",
            )

    def _run_cell(
        self,
        backend: Backend,
        info: ModelInfo,
        cell: Cell,
        prompt_set: PromptSet,
        remaining: list[Prompt],
        already: int,
        manifest: dict[str, Any],
    ) -> CellResult:
        gen = cell.generation
        settings = backend.sampling(gen)
        provenance = _provenance(info, settings, cell)
        entry = manifest["cells"][cell.config_hash]
        entry.update(status="running", provenance=provenance)
        self.save_manifest(manifest)
        result = CellResult(
            cell.label,
            cell.config_hash,
            "running",
            len(prompt_set.prompts),
            already,
            rejections=prompt_set.rejections,
            duplicates=prompt_set.duplicates,
        )
        self.progress.start_cell(cell.label, len(prompt_set.prompts), already)
        started = time.monotonic()

        rendered = backend.render(remaining, gen.max_prompt_tokens)
        if len(rendered) != len(remaining):
            raise BackendError(f"backend {cell.backend_cls.name} rendered {len(rendered)} of {len(remaining)} prompts")
        requests = [
            GenerationRequest(key=i, prompt=p, rendered=r, seed=prompt_seed(gen.seed, p.prompt_id, gen.n), n=gen.n)
            for i, (p, r) in enumerate(zip(remaining, rendered, strict=True))
        ]
        result.truncated = sum(r.truncated for r in rendered)
        if result.truncated:
            self.progress.message(
                f"{cell.label}: {result.truncated} prompt(s) truncated to "
                f"{gen.max_prompt_tokens} tokens (flagged in prompt_truncated)",
                "warning",
            )
        metrics = [
            cls(
                MetricContext(
                    max_new_tokens=gen.max_new_tokens, n=gen.n, options=self.spec.metric_options.get(cls.name, {})
                )
            )
            for cls in self.metric_classes
        ]
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
            keep_text=self.spec.keep_text,
        )
        metadata = {"config_hash": cell.config_hash, "provenance": provenance, "metrics": [m.name for m in metrics]}
        writer = _PartWriter(self, cell, ctx, metrics, metadata, result)
        by_key = {r.key: r for r in requests}
        returned: set[int] = set()
        stream = backend.generate(requests, settings, gen)
        try:
            for out in stream:
                request = by_key.get(out.key)
                if request is None or out.key in returned:
                    raise BackendError(f"backend {cell.backend_cls.name} returned unknown or repeated key {out.key}")
                _validate(out, request, cell.backend_cls.name, gen.max_new_tokens)
                returned.add(out.key)
                writer.add(Finished(request, out.completions, out.gen_time, out.input_size))
                if self.stop:
                    break
            writer.flush()
        except BaseException as exc:
            _close(stream)
            writer.flush_quietly()
            result.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            result.error = f"{type(exc).__name__}: {exc}"
            entry.update(
                status=result.status, prompts_done=already + result.written, backend_report=_backend_report(backend)
            )
            self.save_manifest(manifest)
            self.progress.end_cell(cell.label, result.status)
            raise
        if not self.stop and len(returned) != len(requests):
            missing = [r.prompt.prompt_id for r in requests if r.key not in returned]
            raise BackendError(
                f"backend {cell.backend_cls.name} returned no result for {len(missing)} prompt(s), e.g. {missing[:3]}"
            )
        _close(stream)
        result.seconds = time.monotonic() - started
        result.status = "interrupted" if self.stop else "done"
        entry.update(
            status=result.status,
            prompts_done=already + result.written,
            backend_report=_backend_report(backend),
            rejected_records=[r.model_dump() for r in prompt_set.rejections[:100]],
        )
        self.save_manifest(manifest)
        self.progress.end_cell(cell.label, result.status)
        return result


class _PartWriter:
    """Buffers finished prompts and writes them as parts by size or by age."""

    def __init__(
        self,
        engine: Engine,
        cell: Cell,
        ctx: CellContext,
        metrics: list[Metric],
        metadata: dict[str, Any],
        result: CellResult,
    ) -> None:
        self.engine = engine
        self.cell = cell
        self.ctx = ctx
        self.metrics = metrics
        self.metadata = metadata
        self.result = result
        self.buffer: list[Finished] = []
        self.responses = 0
        self.tokens = 0
        self.last_flush = time.monotonic()
        metric_columns(metrics)  # fail early on a metric whose columns cannot be listed

    def add(self, finished: Finished) -> None:
        self.buffer.append(finished)
        self.responses += len(finished.completions)
        tokens = sum(c.output_tokens for c in finished.completions)
        self.tokens += tokens
        self.engine.progress.advance(1, tokens)
        if (
            self.responses >= self.engine.flush_responses
            or time.monotonic() - self.last_flush >= self.engine.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            prompts, responses = build_tables(self.buffer, self.ctx, self.metrics)
            self.engine.store.write_part(
                self.cell.model, self.cell.dataset, self.cell.config_hash, prompts, responses, self.metadata
            )
            self.result.written += len(self.buffer)
            self.result.responses += self.responses
            self.result.tokens += self.tokens
        self.buffer, self.responses, self.tokens = [], 0, 0
        self.last_flush = time.monotonic()

    def flush_quietly(self) -> None:
        """Flush on the way out of a failure; a second failure must not hide the first."""
        try:
            self.flush()
        except Exception:
            log.exception("could not flush finished prompts of %s", self.cell.label)


def _close(stream: Any) -> None:
    """Close a backend's result generator so its ``finally`` aborts work in flight."""
    close = getattr(stream, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("closing the backend's result stream failed")


def _backend_report(backend: Backend) -> dict[str, Any]:
    try:
        return dict(backend.report())
    except Exception as exc:  # noqa: BLE001 - a report must not hide the run's outcome
        return {"error": f"report() failed: {type(exc).__name__}: {exc}"}


def _by_model(cells: list[Cell]) -> list[list[Cell]]:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        key = (cell.backend_cls.name, cell.spec.model_dump_json())
        groups.setdefault(key, []).append(cell)
    return list(groups.values())


def _now() -> str:
    from castillo_core.store import _now as now

    return now()


def _version() -> str:
    from castillo_core import __version__

    return __version__
