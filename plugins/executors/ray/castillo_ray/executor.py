"""The Ray executor: the same grid across many workers, GPUs and nodes, resumable.

The driver (the ``castillo run`` process) does everything the local engine does before a
model loads: it checks configs against the manifest, reads every cell's prompts, finds
what is already stored and writes the run record. Then, instead of opening models
itself, it cuts the work into *tasks* and hands them to Ray:

- A work item is one cell, or one fixed window ``[start, stop)`` of its prompts by
  position in the deterministic selection (``--shard-size N``), so shard boundaries do
  not move between runs or when a larger ``--limit`` extends a run.
- A task is a model's items, packed up to ``N`` prompts (without ``--shard-size``: all
  of a model's cells, exactly like the local executor). It requests the resources its
  model needs (GPUs from ``tensor_parallel_size``, CPUs from ``n_threads``, overrides
  with ``-R``), opens the model once, and writes atomic parts straight into the shared
  output through the same :class:`castillo_core.CellRunner` and store the local executor uses.
- Before each item a worker re-reads which prompts are stored, so a retried task skips
  what its killed predecessor (or any other worker, or an earlier run) already wrote.
- Failures are retried here, not by Ray (``max_retries=0``), so that every attempt's
  reason is kept for the summary and the progress display can take back the prompts a
  dead attempt had counted but never stored. User errors (:class:`CastilloError`: a
  missing library, a bad option) are not retried: they would fail the same way again.
- Workers never write the manifest and never scan the output (a scan would quarantine
  another worker's half-renamed part); the driver rescans once every worker is done,
  which quarantines whatever a killed worker left half-written.

Workers report progress and read the stop flag through one small actor (``Hub``), and
the driver folds the reports into one combined display. ``import ray`` happens only
inside functions: this module is imported by ``castillo run`` even without Ray.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import CastilloError, ConfigError, Executor, Progress, StoreError, parse_options
from castillo_ray.worker import Hub, TaskOutcome, TaskPayload, run_task

if TYPE_CHECKING:
    from castillo_core import Cell, Engine, PendingCell, RunSummary

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "castillo[ray]" (or: pip install "ray[default]")'
_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "accelerator_type")


def require_ray() -> Any:
    """Import Ray, or say how to install it (a clean error, not a traceback)."""
    try:
        import ray
    except ImportError:
        raise CastilloError(f"--executor ray needs Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


def check_output(out: str) -> None:
    """Refuse an object-store URI as the output: the store writes through a filesystem path.

    Called by ``castillo run`` before the engine opens the output (which would create a
    local directory named like the URI), and again by the executor.
    """
    if "://" in str(out):
        raise StoreError(
            f"--out {out}: the store writes to a filesystem path; mount the bucket on every node "
            "(mountpoint-s3, s3fs, gcsfuse) and pass the mount path (see docs/distributed.md)"
        )


# -- planning: items, tasks, resources ---------------------------------------------------------


@dataclass(frozen=True)
class WorkItem:
    """A window of one pending cell's selection: positions ``[start, stop)``."""

    cell_index: int
    start: int
    stop: int
    remaining: int  # prompts of the window not stored when the run was planned


@dataclass
class TaskPlan:
    """One Ray task: a model's work items, run on one opened model."""

    key: str
    label: str
    items: list[WorkItem]
    resources: dict[str, Any]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    failed: bool = False
    seconds: float = 0.0


def task_resources(cell: Cell, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a task of this model asks Ray for: ``num_cpus``, ``num_gpus``, ``memory``, custom.

    A backend class may answer for itself with a ``ray_resources(spec)`` classmethod;
    otherwise GPUs are the model's ``tensor_parallel_size`` (times
    ``pipeline_parallel_size``) and CPUs its ``n_threads``, both where given. ``-R``
    overrides win; keys other than Ray's own become custom resources.
    """
    options = dict(cell.spec.options or {})
    hook = getattr(cell.backend_cls, "ray_resources", None)
    if callable(hook):
        wanted: dict[str, Any] = dict(hook(cell.spec))
    else:
        wanted = {"num_cpus": 1}
        if options.get("n_threads"):
            wanted["num_cpus"] = int(options["n_threads"])
        if options.get("tensor_parallel_size"):
            tp = int(options["tensor_parallel_size"]) * int(options.get("pipeline_parallel_size") or 1)
            wanted["num_gpus"] = tp
    wanted.update(overrides or {})
    out: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for key, value in wanted.items():
        if key in _RESOURCE_KEYS:
            out[key] = value
        else:
            try:
                custom[key] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"--task-resource {key}={value!r}: a custom resource needs a number") from None
    if custom:
        out["resources"] = custom
    return out


def plan_tasks(
    pending: list[PendingCell], shard_size: int | None, overrides: dict[str, Any] | None = None
) -> list[TaskPlan]:
    """Cut pending cells into windows of ``shard_size`` prompts and pack each model's into tasks.

    Windows are positions in the full selection (stored prompts included), so the same
    prompts always fall into the same window. Windows already complete are dropped.
    """
    by_model: dict[tuple[str, str], list[WorkItem]] = {}
    for index, item in enumerate(pending):
        total = len(item.prompt_set.prompts)
        size = shard_size or max(total, 1)
        left = {p.prompt_id for p in item.remaining}
        for start in range(0, total, size):
            window = item.prompt_set.prompts[start : start + size]
            remaining = sum(p.prompt_id in left for p in window)
            if remaining:
                by_model.setdefault(item.cell.model_key, []).append(
                    WorkItem(index, start, start + len(window), remaining)
                )
    tasks: list[TaskPlan] = []
    for items in by_model.values():
        batch: list[WorkItem] = []
        for work in items:
            prompts = sum(w.stop - w.start for w in batch)
            if batch and shard_size is not None and prompts + (work.stop - work.start) > shard_size:
                tasks.append(_task(len(tasks), batch, pending, overrides))
                batch = []
            batch.append(work)
        if batch:
            tasks.append(_task(len(tasks), batch, pending, overrides))
    return tasks


def _task(number: int, items: list[WorkItem], pending: list[PendingCell], overrides: dict[str, Any] | None) -> TaskPlan:
    cell = pending[items[0].cell_index].cell
    parts = []
    for work in items:
        other = pending[work.cell_index]
        whole = work.start == 0 and work.stop == len(other.prompt_set.prompts)
        parts.append(other.cell.dataset if whole else f"{other.cell.dataset}[{work.start}:{work.stop}]")
    label = f"{cell.model} x {', '.join(parts)}"
    return TaskPlan(f"t{number:03d}", label, items, task_resources(cell, overrides))


# -- the driver side ---------------------------------------------------------------------------


@dataclass
class TaskStat:
    """One finished attempt, timed from the driver and from inside the worker (overhead = the gap)."""

    key: str
    attempt: int
    wall: float
    worker: float
    ok: bool
    pid: int = 0
    started_at: float = 0.0


class RayOptions(BaseModel):
    """The Ray executor's options (``-E KEY=VALUE``, or the shorthand flags of ``castillo run``)."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="auto, HOST:PORT or ray://HOST:10001 (--ray-address)")
    shard_size: int | None = Field(None, description="split cells into tasks of at most this many prompts")
    max_retries: int = Field(2, description="retry a failed task this many times")
    resources: dict[str, Any] = Field(default_factory=dict, description="what each task asks Ray for (-R)")
    num_cpus: int | None = Field(None, description="CPUs of a local Ray instance started for the run")
    poll_seconds: float = Field(0.2, gt=0, description="how often the driver polls tasks and progress")


class RayExecutor(Executor):
    """Runs a prepared grid as Ray tasks (see the module docstring for the why of each rule)."""

    name = "ray"
    description = "cells and shards as Ray tasks on a local or remote cluster, resumable, retried"
    requires = ("ray",)
    install_hint = INSTALL_HINT

    def __init__(self, options: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__({**(options or {}), **kwargs})
        opts = parse_options(RayOptions, self.options, "executor ray")
        if opts.shard_size is not None and opts.shard_size < 1:
            raise ConfigError(f"--shard-size {opts.shard_size}: expected a positive number of prompts")
        if opts.max_retries < 0:
            raise ConfigError(f"--max-retries {opts.max_retries}: expected 0 or more")
        self.address = opts.address
        self.shard_size = opts.shard_size
        self.max_retries = opts.max_retries
        self.resources = dict(opts.resources)
        self.num_cpus = opts.num_cpus
        self.poll_seconds = opts.poll_seconds
        self.tasks: list[TaskPlan] = []
        self.stats: list[TaskStat] = []
        self.init_seconds = 0.0
        self._shown = 0  # prompts the combined display counts as done

    def check(self, out: str) -> None:
        """Ray importable and the output a filesystem path, before anything is shown or written."""
        require_ray()
        check_output(out)

    # -- connecting --------------------------------------------------------------------------

    def _connect(self, ray: Any) -> bool:
        """Join the cluster at ``address`` (or $RAY_ADDRESS), or start a local one; True if started here.

        Without an address a *new* local instance starts (``address="local"``): plain
        ``ray.init()`` would quietly join any cluster someone else started on this machine.
        """
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        unreachable = _unreachable(address)
        if unreachable:
            raise CastilloError(
                f"cannot reach the Ray cluster at {address} ({unreachable}); is it running (`ray start --head`)? "
                "Check --ray-address or $RAY_ADDRESS"
            )
        started = time.monotonic()
        try:
            if address == "local":
                ray.init(
                    address="local", num_cpus=self.num_cpus, include_dashboard=False, logging_level=logging.WARNING
                )
            else:
                ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise CastilloError(
                f"cannot connect to Ray at {address}: {exc}; start a cluster (`ray start --head`) or check "
                "--ray-address (auto, HOST:6379 or ray://HOST:10001)"
            ) from None
        self.init_seconds = time.monotonic() - started
        return address == "local"

    # -- running -----------------------------------------------------------------------------

    def execute(self, engine: Engine, summary: RunSummary) -> None:
        """Prepare every cell, run what is left as Ray tasks, and fill ``summary``."""
        ray = require_ray()
        out = engine.store.root
        check_output(engine.spec.out)
        pending = engine.prepare(engine.cells, summary)
        if not pending:
            return  # everything is stored: no cluster needed
        self.tasks = plan_tasks(pending, self.shard_size, self.resources)
        started_here = self._connect(ray)
        try:
            self._drive(ray, engine, pending, summary, out.resolve())
        finally:
            if started_here:
                ray.shutdown()

    def _payloads(self, engine: Engine, pending: list[PendingCell], out: Path) -> dict[str, TaskPayload]:
        cells = [p.cell for p in pending]
        settings = engine.runner_settings()
        payloads = {}
        for task in self.tasks:
            items = []
            for work in task.items:
                window = pending[work.cell_index].prompt_set.prompts[work.start : work.stop]
                items.append((work.cell_index, window, len(window) - work.remaining))
            payloads[task.key] = TaskPayload(task.key, str(out), cells, settings, items, os.getcwd())
        return payloads

    def _drive(
        self,
        ray: Any,
        engine: Engine,
        pending: list[PendingCell],
        summary: RunSummary,
        out: Path,
    ) -> None:
        progress = engine.progress
        hub = ray.remote(num_cpus=0)(Hub).remote()
        remote = ray.remote(run_task)
        refs = {key: ray.put(payload) for key, payload in self._payloads(engine, pending, out).items()}
        counted: dict[tuple[str, int], int] = {}  # prompts each attempt reported (taken back if it dies)
        running: dict[Any, tuple[TaskPlan, float]] = {}
        outcomes: list[TaskOutcome] = []

        def submit(task: TaskPlan) -> None:
            task.attempts += 1
            counted[(task.key, task.attempts)] = 0
            options = {"max_retries": 0, "retry_exceptions": False, "name": f"castillo:{task.key}", **task.resources}
            ref = remote.options(**options).remote(refs[task.key], hub, task.attempts)
            running[ref] = (task, time.monotonic())

        draining: list[Any] = []  # the one drain call in flight: never wait on it (the hub may still start)

        def pump() -> None:
            if not draining:
                draining.append(hub.drain.remote())
            if not ray.wait(draining, timeout=0)[0]:
                return
            for event in ray.get(draining.pop()):
                kind, key, attempt = event[:3]
                task = next(t for t in self.tasks if t.key == key)
                if attempt != task.attempts or task.failed:
                    continue  # a dead attempt's last words
                if kind == "advance":
                    counted[(key, attempt)] += event[3]
                    self._shown += event[3]
                    progress.advance(event[3], event[4])
                elif kind == "message":
                    progress.message(f"{task.label}: {event[3]}", event[4])

        total = sum(len(p.prompt_set.prompts) for p in pending)
        stored = sum(p.already for p in pending)
        engine.mark_running([item.cell for item in pending])
        progress.message(
            f"ray: {len(self.tasks)} task(s) for {len(pending)} cell(s) on {_cluster(ray)}"
            + (f" (started in {self.init_seconds:.1f} s)" if self.init_seconds else ""),
        )
        progress.start_cell(f"{len(pending)} cell(s) on Ray, {len(self.tasks)} task(s)", total, stored)
        self._shown = stored
        stop_sent = False
        try:
            for task in self.tasks:
                submit(task)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_seconds)
                if engine.stop and not stop_sent:
                    hub.stop.remote()
                    stop_sent = True
                pump()
                for ref in ready:
                    task, submitted = running.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - every way a task dies is reported
                        pump()
                        self.stats.append(TaskStat(task.key, task.attempts, time.monotonic() - submitted, 0.0, False))
                        self._failed(task, exc, counted, progress, stop_sent)
                        if not task.failed:
                            submit(task)
                        continue
                    wall = time.monotonic() - submitted
                    stat = TaskStat(
                        task.key, task.attempts, wall, outcome.seconds, True, outcome.pid, outcome.started_at
                    )
                    self.stats.append(stat)
                    task.seconds = outcome.seconds
                    outcomes.append(outcome)
                    self._record(outcome, pending, engine)
            pump()
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        self._finish(engine, pending, outcomes, summary)

    def _failed(
        self, task: TaskPlan, exc: BaseException, counted: dict[tuple[str, int], int], progress: Progress, stop: bool
    ) -> None:
        reason = _reason(exc)
        task.errors.append(f"attempt {task.attempts}: {reason}")
        lost = counted.get((task.key, task.attempts), 0)
        if lost:
            self._shown -= lost
            progress.advance(-lost, 0)  # the retry counts what was stored again when it starts
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, CastilloError) and not cause.retryable:
            why = "not retried (a user error fails the same way again)"
        elif stop:
            why = "not retried (interrupted)"
        elif task.attempts > self.max_retries:
            why = f"giving up after {task.attempts} attempt(s)"
        else:
            why = f"retrying ({task.attempts}/{self.max_retries})"
        task.failed = not why.startswith("retrying")
        progress.message(
            f"task {task.key} ({task.label}) failed: {reason}; {why}", "error" if task.failed else "warning"
        )

    @staticmethod
    def _record(outcome: TaskOutcome, pending: list[PendingCell], engine: Engine) -> None:
        """Keep the provenance of a finished task's cells (with its node) in the manifest."""
        for index, result in outcome.results:
            if result.provenance is not None:
                engine.note_provenance(pending[index].cell, {**result.provenance, "ray_node": outcome.node})

    def _finish(
        self,
        engine: Engine,
        pending: list[PendingCell],
        outcomes: list[TaskOutcome],
        summary: RunSummary,
    ) -> None:
        """Rescan the output (no worker writes now), then judge every cell by what the store holds."""
        from castillo_core import CellResult

        for message in engine.store.open().messages():
            engine.progress.message(f"after the workers finished: {message}", "warning")
        per_cell: dict[int, list[CellResult]] = {}
        for outcome in outcomes:
            for index, result in outcome.results:
                per_cell.setdefault(index, []).append(result)
        errors: dict[int, list[str]] = {}
        for task in self.tasks:
            for work in task.items:
                errors.setdefault(work.cell_index, []).extend(f"{task.key} {e}" for e in task.errors)
            if task.failed:
                summary.failures.append(f"{task.label}: {'; '.join(task.errors)}")
        stored = []
        for item in pending:
            done = engine.stored(item.cell)
            stored.append(sum(p.prompt_id in done for p in item.prompt_set.prompts))
        if sum(stored) != self._shown:  # the display ends on what is stored, whatever attempts reported
            engine.progress.advance(sum(stored) - self._shown, 0)
        for index, item in enumerate(pending):
            cell, parts = item.cell, per_cell.get(index, [])
            status = "done" if stored[index] == len(item.prompt_set.prompts) else "failed"
            if status == "failed" and engine.stop:
                status = "interrupted"
            result = CellResult(
                cell.label,
                cell.config_hash,
                status,
                len(item.prompt_set.prompts),
                item.already,
                written=stored[index] - item.already,
                responses=sum(r.responses for r in parts),
                tokens=sum(r.tokens for r in parts),
                seconds=max((r.seconds for r in parts), default=0.0),
                rejections=item.prompt_set.rejections,
                duplicates=item.prompt_set.duplicates,
                truncated=sum(r.truncated for r in parts),
                error="; ".join(errors.get(index, [])) or None,
            )
            summary.cells.append(result)
            engine.record(result, stored=stored[index])
            engine.progress.end_cell(cell.label, status)


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why HOST:PORT (or ray://HOST:PORT) does not answer, if it does not.

    Ray itself keeps retrying an unreachable address for minutes; a TCP connect says at once.
    """
    if address in {"auto", "local"} or ("://" in address and not address.startswith("ray://")):
        return None
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _cluster(ray: Any) -> str:
    try:
        res = ray.cluster_resources()
    except Exception:  # noqa: BLE001 - only a description
        return "the cluster"
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    gpus = int(res.get("GPU", 0))
    return f"{nodes} node(s), {int(res.get('CPU', 0))} CPU(s)" + (f", {gpus} GPU(s)" if gpus else "")


def _reason(exc: BaseException) -> str:
    """One line saying why a task died: killed, out of memory, or the exception it raised."""
    name = type(exc).__name__
    cause = getattr(exc, "cause", None)
    if "OutOfMemory" in name:
        return "out of memory (killed by Ray's memory monitor); ask for more with -R memory=BYTES or fewer prompts"
    if "WorkerCrashed" in name or "ActorDied" in name:
        return "worker died (killed by a signal, crashed, or its node was lost)"
    if "NodeDied" in name:
        return "its node died"
    if "TaskCancelled" in name:
        return "cancelled"
    if cause is not None:
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0] if text else ''}"
    text = str(exc).strip().splitlines()
    return f"{name}: {text[0] if text else ''}"
