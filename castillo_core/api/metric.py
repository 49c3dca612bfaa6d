"""The metric contract: per-response columns and their per-prompt aggregates, scored in batches.

Kept apart from :mod:`castillo_core.api.contracts` (re-exported there and by ``castillo_core``)
because a metric has its own batch type and options, and is the contract third parties write most.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel

from castillo_core.api.columns import Column
from castillo_core.api.described import Described

if TYPE_CHECKING:  # numpy loads when a metric runs, not when castillo lists its plugins
    import numpy as np


@dataclass(frozen=True)
class MetricContext:
    """What a metric may need to know about the run (caps are relative to it)."""

    max_new_tokens: int
    n: int
    options: Mapping[str, Any] = field(default_factory=dict)


class ResponseBatch:
    """Many prompts' completions, flattened, for vectorized scoring.

    Responses of prompt ``j`` are ``offsets[j]:offsets[j+1]``. Reductions turn a
    per-response array into a per-prompt one.
    """

    __slots__ = ("_columns", "finish_reasons", "max_new_tokens", "offsets", "output_tokens", "texts")

    def __init__(
        self,
        texts: Sequence[str],
        output_tokens: np.ndarray,
        finish_reasons: Sequence[str],
        offsets: np.ndarray,
        max_new_tokens: int,
    ) -> None:
        self.texts = texts
        self.output_tokens = output_tokens
        self.finish_reasons = finish_reasons
        self.offsets = offsets
        self.max_new_tokens = max_new_tokens
        self._columns: dict[str, np.ndarray] = {}

    @property
    def n_prompts(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return len(self.texts)

    def column(self, name: str) -> np.ndarray:
        """A per-response column computed by a metric earlier in this batch."""
        return self._columns[name]

    def reduce(self, values: Sequence[Any] | np.ndarray, how: Literal["sum", "max", "min", "mean"]) -> np.ndarray:
        """Reduce a per-response array to one value per prompt."""
        import numpy as np

        array = np.asarray(values)
        if array.dtype == bool:
            array = array.astype(np.int64)
        starts = self.offsets[:-1]
        if how == "sum":
            return np.add.reduceat(array, starts)
        if how == "max":
            return np.maximum.reduceat(array, starts)
        if how == "min":
            return np.minimum.reduceat(array, starts)
        if how == "mean":
            return np.add.reduceat(array.astype(np.float64), starts) / np.diff(self.offsets)
        raise ValueError(f"unknown reduction {how!r}")


class Metric(Described, ABC):
    """Per-response columns, and how they aggregate per prompt.

    ``score`` sees many responses at once (vectorize where you can: the engine pushes
    tens of thousands of responses per second through every metric). A response's values
    may depend on its own prompt's other responses, never on other prompts in the batch.

    Class attributes the core reads without instantiating the metric:

    - ``Options``: a pydantic model of the metric's options (``-M NAME.KEY=VALUE``). The core
      validates them before any model loads (unknown keys refused) and hands the validated
      values, defaults filled, to the metric as ``context.options``. ``None``: no options.
    - ``default``: whether the metric runs when ``--metric`` is not given. A metric with a
      required option never does.
    - ``version``: bump it when the metric's values change; it is recorded with the data
      (with the options), and a resume that would mix two versions is refused. ``None``:
      the version of the distribution that registered it.
    """

    Options: ClassVar[type[BaseModel] | None] = None
    default: ClassVar[bool] = True
    version: ClassVar[str | None] = None

    def __init__(self, context: MetricContext) -> None:
        self.context = context

    @classmethod
    def needs_options(cls) -> bool:
        """Whether the metric has an option without a default (it then never runs by default)."""
        return cls.Options is not None and any(f.is_required() for f in cls.Options.model_fields.values())

    @classmethod
    def runs_by_default(cls) -> bool:
        return cls.default and not cls.needs_options()

    @abstractmethod
    def response_columns(self) -> list[Column]:
        """Columns added to the responses table, one value per completion."""

    def prompt_columns(self) -> list[Column]:
        """Columns added to the prompts table, one value per prompt."""
        return []

    @abstractmethod
    def score(self, batch: ResponseBatch) -> Mapping[str, Sequence[Any] | np.ndarray]:
        """Values of every response column, one per response of ``batch``."""

    def aggregate(self, batch: ResponseBatch) -> Mapping[str, Sequence[Any] | np.ndarray]:
        """Values of every prompt column, one per prompt; ``batch.column`` has the scores."""
        return {}
