"""The engine: run a grid of cells, resumably, into a store.

Data flows one way: corpus -> prompts -> backend (render, generate) -> completions ->
metrics -> per-prompt aggregation -> store. The :class:`Engine` is the driver: it checks
the plan against what the output holds before any model loads, keeps the manifest (it is
its only writer during a run), and hands the work to an executor. Executors use this
public API, and only it:

- :meth:`Engine.prepare` reads cells' prompts and what is stored, and returns the
  :class:`PendingCell` s left to generate (finished cells go to the summary as skipped);
- :meth:`Engine.runner` builds the :class:`CellRunner` that generates a pending cell on
  an opened model and writes its parts (workers build theirs with
  :meth:`Engine.runner_settings` and their own store and progress);
- :meth:`Engine.mark_running`, :meth:`Engine.cell_started`, :meth:`Engine.note_provenance` and
  :meth:`Engine.record` put a cell's status, provenance and
  outcome into the manifest;
- :meth:`Engine.stored` says which prompt ids of a cell the store holds now.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from castillo_core.api.contracts import Executor
from castillo_core.api.errors import BackendUnavailableError, ConfigChangedError, CorpusError, Interrupted
from castillo_core.api.metric import Metric
from castillo_core.api.redact import redact, redact_value
from castillo_core.engine.manifest import Manifest, RunRecord, now
from castillo_core.engine.metrics import probe as probe_metrics
from castillo_core.engine.metrics import resolve as resolve_metrics
from castillo_core.engine.plan import Cell, RunSpec, describe_difference, expand
from castillo_core.engine.progress import Progress
from castillo_core.engine.prompts import PromptSet, select_prompts
from castillo_core.engine.runner import CellRunner, RunnerSettings
from castillo_core.engine.signals import StopFlag
from castillo_core.engine.store import Store
from castillo_core.engine.work import CellResult, PendingCell, RunSummary
from castillo_core.plugins.manager import Plugins

log = logging.getLogger(__name__)


def load_prompts(cell: Cell) -> PromptSet:
    """Read a cell's prompts (see :func:`castillo_core.engine.prompts.select_prompts`)."""
    return select_prompts(cell.corpus_cls, cell.selection)


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
    ) -> None:
        self.spec = spec
        self.plugins = plugins
        self.progress = progress or Progress()
        self.flush_responses = flush_responses
        self.flush_seconds = flush_seconds
        self.stop: Any = stop if stop is not None else StopFlag()
        self.argv = list(argv or [])
        self.executor = executor
        self.store = Store(spec.out)
        self.cells = expand(spec, plugins)
        self.metrics = resolve_metrics(plugins, spec.metrics, spec.metric_options)
        self.manifest = Manifest()

    @property
    def metric_classes(self) -> list[type[Metric]]:
        return [m.cls for m in self.metrics]

    def metric_record(self) -> dict[str, Any]:
        """The run's metrics as recorded with the data (name -> distribution, version, options)."""
        return {m.name: m.record() for m in self.metrics}

    # -- checks before any model is loaded ------------------------------------------------

    def check_configs(self) -> None:
        """Refuse cells whose (model, dataset) the output holds under another config."""
        for cell in self.cells:
            for old_hash, old in self.manifest.cells.items():
                same_cell = old.model == cell.model and old.dataset == cell.dataset
                if same_cell and old_hash != cell.config_hash:
                    diff = describe_difference(old.config, cell.config)
                    raise ConfigChangedError(
                        f"{self.store.root} already holds {cell.label} under config {old_hash}; this run asks for "
                        f"config {cell.config_hash}. What differs:\n  "
                        + "\n  ".join(diff or ["(unknown)"])
                        + "\nUse a different --out for a different config, or re-run the original command to resume."
                    )
            stored = self.store.finished(cell.model, cell.dataset)
            foreign = [h for h in stored if h != cell.config_hash]
            if foreign:
                raise ConfigChangedError(
                    f"{self.store.root} holds parts of {cell.label} written under config {foreign[0]} (the manifest "
                    f"does not say how it differs); this run asks for config {cell.config_hash}. Use another --out."
                )
            entry = self.manifest.cells.get(cell.config_hash)
            if entry is not None and entry.metrics is not None and stored and entry.metrics != self.metric_record():
                self._refuse_metrics(cell, entry.metrics)

    def _refuse_metrics(self, cell: Cell, recorded: dict[str, Any]) -> None:
        diff = describe_difference(recorded, self.metric_record())
        raise ConfigChangedError(
            f"{self.store.root} holds {cell.label} scored with other metrics than this run's; resuming would mix "
            "them in one column. What differs:\n  "
            + "\n  ".join(diff)
            + "\nRe-run with the stored metrics (--metric/-M), or change the stored rows first with "
            f"`castillo rescore {self.store.root} --metric NAME [-M NAME.KEY=VALUE]` (or --drop NAME)."
        )

    # -- running -----------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Check, record the run, execute every cell (locally unless told otherwise), record the end.

        The whole run holds the output's writer lock: a second writer is refused at once.
        """
        for cell in self.cells:  # a library that is not installed is said before the output is touched
            missing = cell.backend_cls.missing()
            if missing:
                raise BackendUnavailableError(
                    f"backend {cell.backend_cls.name} needs {', '.join(missing)}, which is not installed; "
                    f"{cell.backend_cls.install_hint or 'install the backend plugin with its extra'}"
                )
        with self.store.lock():
            return self._run_locked()

    def _run_locked(self) -> RunSummary:
        from castillo_core import __version__
        from castillo_core.executors.local import LocalExecutor

        report = self.store.open()
        self.manifest = self.store.read_manifest()
        self.check_configs()
        for gen in {c.generation.model_dump_json(): c.generation for c in self.cells}.values():
            probe_metrics(self.metrics, gen.max_new_tokens, gen.n)  # before any model loads
        for message in report.messages():
            self.progress.message(message, "warning")
        self._repair_metrics()
        record = RunRecord(argv=[redact(a) for a in self.argv], spec=self._public_spec())
        self.manifest.runs.append(record)
        if self.manifest.castillo_version is None:
            self.manifest.castillo_version = __version__
        self.save_manifest()
        summary = RunSummary(out=str(self.store.root))
        self.progress.start_run(len(self.cells))
        try:
            (self.executor or LocalExecutor()).execute(self, summary)
            if self.stop:
                interrupted = Interrupted(f"interrupted; finished prompts are stored in {self.store.root}")
                interrupted.exit_code = getattr(self.stop, "exit_code", 130)
                raise interrupted
            record.status = "done" if summary.ok else "incomplete"
        except Interrupted:
            record.status = "interrupted"
            raise
        except BaseException:
            record.status = "failed"
            raise
        finally:
            record.finished = now()
            self.save_manifest()
        return summary

    def _public_spec(self) -> dict[str, Any]:
        """The spec as recorded: each model's options as its backend allows, URL credentials redacted."""
        spec = self.spec.model_dump(mode="json")
        for entry in spec.get("models", []):
            try:
                backend_cls = self.plugins.backend(entry["backend"])
                entry["options"] = backend_cls.public_options(entry.get("options") or {})
            except Exception:  # noqa: BLE001 - recording must not fail the run; redaction below still applies
                entry["options"] = {k: "***" for k in entry.get("options") or {}}
        return dict(redact_value(spec))

    def _repair_metrics(self) -> None:
        """Fill the columns a metric failed to compute in stored parts, now that it works (no model)."""
        from castillo_core.engine.rescore import rescore

        if not self.metrics or not any(e.metrics for e in self.manifest.cells.values()):
            return
        summary = rescore(self.store.root, self.metrics, only_missing=True, store=self.store)
        if summary.parts:
            self.progress.message(
                f"computed the missing metric columns of {summary.parts} stored part(s) ({summary.prompts} prompts); "
                "nothing was generated again"
            )

    def groups(self, cells: list[Cell] | None = None) -> list[list[Cell]]:
        """Cells grouped by model (backend and model spec), in plan order: each group opens one model."""
        groups: dict[tuple[str, str], list[Cell]] = {}
        for cell in self.cells if cells is None else cells:
            groups.setdefault(cell.model_key, []).append(cell)
        return list(groups.values())

    def stored(self, cell: Cell) -> set[str]:
        """The prompt ids of ``cell`` (its config) the store holds now."""
        return self.store.finished(cell.model, cell.dataset).get(cell.config_hash, set())

    def prepare(self, cells: list[Cell], summary: RunSummary) -> list[PendingCell]:
        """Read the cells' prompts and what is stored; finished cells go to ``summary`` as skipped."""
        pending: list[PendingCell] = []
        for cell in cells:
            prompt_set = load_prompts(cell)
            if not prompt_set.prompts and cell.selection.limit != 0:
                source = f" ({cell.selection.source})" if cell.selection.source else ""
                raise CorpusError(
                    f"corpus {cell.corpus_cls.name}{source} selected no prompt for {cell.label}"
                    + (f": all {len(prompt_set.rejections)} record(s) were rejected" if prompt_set.rejections else "")
                    + "; check the file, --split and -C options (castillo prompts shows the selection)"
                )
            done_ids = self.stored(cell)
            remaining = [p for p in prompt_set.prompts if p.prompt_id not in done_ids]
            already = len(prompt_set.prompts) - len(remaining)
            self._announce(cell, prompt_set)
            entry = self.manifest.cell(cell.config_hash, cell.model, cell.dataset)
            entry.model_id = cell.model_id
            entry.backend = cell.backend_cls.name
            entry.config = cell.config
            entry.prompts_total = len(prompt_set.prompts)
            entry.rejected = len(prompt_set.rejections)
            entry.duplicates_merged = sum(prompt_set.duplicates.values())
            if entry.metrics is None:
                entry.metrics = self.metric_record()
            if remaining:
                pending.append(PendingCell(cell, prompt_set, remaining, already))
                continue
            entry.status, entry.prompts_done = "done", len(prompt_set.prompts)
            total = len(prompt_set.prompts)
            summary.cells.append(
                CellResult(
                    cell.label,
                    cell.config_hash,
                    "skipped",
                    total,
                    already,
                    rejections=prompt_set.rejections,
                    duplicates=prompt_set.duplicates,
                )
            )
            self.progress.start_cell(cell.label, total, already)
            self.progress.end_cell(cell.label, "skipped")
        self.save_manifest()
        return pending

    def runner_settings(self) -> RunnerSettings:
        """What a :class:`CellRunner` needs to write like this engine (picklable: it travels to workers)."""
        return RunnerSettings(
            metrics=list(self.metrics),
            keep_text=self.spec.keep_text,
            flush_responses=self.flush_responses,
            flush_seconds=self.flush_seconds,
        )

    def runner(self) -> CellRunner:
        """A runner writing into this engine's store, reporting to its progress, obeying its stop flag."""
        return CellRunner(self.store, self.runner_settings(), self.progress, self.stop)

    # -- the manifest ---------------------------------------------------------------------

    def mark_running(self, cells: Sequence[Cell]) -> None:
        """Mark cells running before their work is handed out (a cluster executor's tasks start later)."""
        for cell in cells:
            self.manifest.cells[cell.config_hash].status = "running"
        self.save_manifest()

    def note_provenance(self, cell: Cell, provenance: dict[str, Any]) -> None:
        """Keep where a cell's numbers came from as soon as a worker reports it (before the cell ends)."""
        self.manifest.cells[cell.config_hash].provenance = provenance
        self.save_manifest()

    def cell_started(self, result: CellResult) -> None:
        """Mark a cell running with its provenance (written before generation starts)."""
        entry = self.manifest.cells[result.config_hash]
        entry.status = "running"
        if result.provenance is not None:
            entry.provenance = result.provenance
        self.save_manifest()

    def record(self, result: CellResult, stored: int | None = None) -> None:
        """Put a cell's outcome into the manifest; ``stored`` overrides the prompts-done count."""
        entry = self.manifest.cells[result.config_hash]
        entry.status = result.status
        entry.prompts_done = result.already_done + result.written if stored is None else stored
        if result.provenance is not None:
            entry.provenance = result.provenance
        if result.backend_report:
            entry.backend_report = result.backend_report
        entry.rejected_records = [r.model_dump() for r in result.rejections[:100]]
        if result.error:
            entry.errors = [*entry.errors, result.error][-20:]
        self.save_manifest()

    def save_manifest(self) -> None:
        self.store.write_manifest(self.manifest)

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
