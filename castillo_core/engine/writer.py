"""Buffering finished prompts and writing them as atomic parts, by size or by age.

A crash loses at most one buffer (``flush_responses`` responses or ``flush_seconds``
seconds of work); everything flushed is a finished prompt the next run skips.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from castillo_core.api.metric import Metric
from castillo_core.api.records import GenerationRequest, PromptResult
from castillo_core.engine.metrics import MetricError, MetricSetting
from castillo_core.engine.plan import Cell
from castillo_core.engine.progress import Progress
from castillo_core.engine.rows import CellContext, Finished, build_tables, metric_columns
from castillo_core.engine.store import Store
from castillo_core.engine.work import CellResult

log = logging.getLogger(__name__)


class PartWriter:
    """Buffers one cell's finished prompts and writes them into the store as parts."""

    def __init__(
        self,
        store: Store,
        cell: Cell,
        ctx: CellContext,
        metrics: list[tuple[MetricSetting, Metric]],
        metadata: dict[str, Any],
        result: CellResult,
        progress: Progress,
        flush_responses: int,
        flush_seconds: float,
    ) -> None:
        self.store = store
        self.cell = cell
        self.ctx = ctx
        self.metrics = metrics
        self.metadata = metadata
        self.result = result
        self.progress = progress
        self.flush_responses = flush_responses
        self.flush_seconds = flush_seconds
        self.buffer: list[Finished] = []
        self.responses = 0
        self.tokens = 0
        self.last_flush = time.monotonic()
        metric_columns([m for _, m in metrics])  # fail early on a metric whose columns cannot be listed

    def add(self, request: GenerationRequest, out: PromptResult) -> None:
        """Buffer one validated result; flush when the buffer is big or old enough."""
        completions = out.completions
        if any(c.sample_index != i for i, c in enumerate(completions)):  # stored in sample order, always
            completions = tuple(sorted(completions, key=lambda c: c.sample_index))
        self.buffer.append(Finished(request, completions, out.gen_time, out.input_size))
        self.responses += len(out.completions)
        tokens = sum(c.output_tokens for c in out.completions)
        self.tokens += tokens
        self.progress.advance(1, tokens)
        if self.responses >= self.flush_responses or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffer as one part. A failing metric's columns are left out of it, the part
        is written anyway (no completion is lost to a metric), and then the metric's error is raised.
        """
        failures: dict[str, str] = {}
        if self.buffer:
            prompts, responses, failures = build_tables(self.buffer, self.ctx, self.metrics)
            ok = [(s, m) for s, m in self.metrics if s.name not in failures]
            metadata = {
                **self.metadata,
                "metrics": {s.name: s.record() for s, _ in ok},
                "metric_columns": {
                    s.name: {
                        "responses": [c.name for c in m.response_columns()],
                        "prompts": [c.name for c in m.prompt_columns()],
                    }
                    for s, m in ok
                },
            }
            if failures:
                metadata["metric_errors"] = failures
            self.store.write_part(
                self.cell.model, self.cell.dataset, self.cell.config_hash, prompts, responses, metadata
            )
            self.result.written += len(self.buffer)
            self.result.responses += self.responses
            self.result.tokens += self.tokens
        stored = len(self.buffer)
        self.buffer, self.responses, self.tokens = [], 0, 0
        self.last_flush = time.monotonic()
        if failures:
            raise MetricError(
                f"{next(iter(failures.values()))}. The {stored} prompt(s) of this part are stored without its "
                "columns; fix or disable the metric and re-run the same command (nothing is generated again)"
            )

    def flush_quietly(self) -> None:
        """Flush on the way out of a failure; a second failure must not hide the first."""
        try:
            self.flush()
        except Exception:
            log.exception("could not flush finished prompts of %s", self.cell.label)
