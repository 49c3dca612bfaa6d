"""The three contracts a plugin implements: Backend, Corpus and Metric.

A plugin registers a *class*. Class attributes describe it (name, what it needs, how
to install that) so that listing plugins never instantiates them, and never imports
the heavy library behind them: those imports belong inside ``open``/``generate``.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:  # numpy loads when a metric runs, not when castillo lists its plugins
    import numpy as np

    from castillo_core.engine.engine import Engine
    from castillo_core.engine.work import RunSummary

from castillo_core.api.columns import Column
from castillo_core.api.errors import ConfigError
from castillo_core.api.records import (
    CorpusSelection,
    GenerationConfig,
    GenerationRequest,
    ModelSpec,
    Prompt,
    PromptResult,
    Rejection,
    Rendered,
    SamplingSettings,
)

_Options = TypeVar("_Options", bound=BaseModel)


def missing_requirements(requires: Sequence[str]) -> list[str]:
    """Import names in ``requires`` that are not installed, found without importing them."""
    missing = []
    for name in requires:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def parse_options(model: type[_Options], options: Mapping[str, Any], where: str) -> _Options:
    """Validate a plugin's free-form options with its pydantic model.

    ``where`` names the plugin ("backend llamacpp") so the error says whose option is
    wrong, e.g. ``backend llamacpp: option n_ctx: Input should be a valid integer``.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"option {'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}" for err in exc.errors()
        )
        known = ", ".join(sorted(model.model_fields)) or "none"
        raise ConfigError(f"{where}: {problems} (known options: {known})") from None


class _Described:
    """Class-level description shared by every kind of plugin."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    @classmethod
    def missing(cls) -> list[str]:
        """The libraries this plugin needs that are not installed (without importing them)."""
        return missing_requirements(cls.requires)


@dataclass(frozen=True)
class ModelInfo:
    """What a backend resolved when it opened a model: the provenance of its numbers."""

    model: str
    revision: str | None = None
    dtype: str | None = None
    chat_template: str | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    hardware: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(_Described, ABC):
    """An inference backend: opens one model, renders prompts, samples completions.

    Lifecycle, driven by the engine: ``__init__`` (cheap) -> ``open`` (load the model,
    once) -> for each cell of that model: ``sampling`` then ``render`` then
    ``generate`` -> ``close``.
    """

    aliases: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str | None] = None

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @classmethod
    def model_aliases(cls) -> dict[str, str]:
        """Model aliases this backend resolves, each to where it points (must be cheap)."""
        return {}

    @classmethod
    def model_id(cls, spec: ModelSpec) -> str:
        """The model id stored in the dataset (before "/" becomes "--"); cheap, no loading.

        Resume needs it before the model is opened, so it must not load anything.
        """
        model = spec.model or cls.default_model
        if not model:
            raise ConfigError(f"backend {cls.name}: no model given and the backend has no default; pass --model")
        return model

    @classmethod
    def hashed_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options that change the numbers; they enter the config hash.

        Override to leave out options that only change speed (thread counts, ...).
        """
        return dict(options)

    @abstractmethod
    def open(self) -> ModelInfo:
        """Load the model (heavy imports happen here) and report what was resolved."""

    @abstractmethod
    def sampling(self, config: GenerationConfig) -> SamplingSettings:
        """The sampling values this backend will apply for ``config`` with this model."""

    @abstractmethod
    def render(self, prompts: Sequence[Prompt], max_prompt_tokens: int) -> list[Rendered]:
        """Apply the chat template once, count prompt tokens, truncate and flag long ones."""

    @abstractmethod
    def generate(
        self, requests: Sequence[GenerationRequest], settings: SamplingSettings, config: GenerationConfig
    ) -> Iterator[PromptResult]:
        """Sample ``request.n`` completions of every request, in any order.

        Yield each request's result as soon as all its completions are done, so the
        engine can store it (a crash then loses little). Batch as the library does best.
        The engine closes the generator when it stops early (Ctrl-C, a failure), so a
        ``try/finally`` in it is the place to abort work still in flight.

        ``finish_reason="length"`` means the cap cut the completion: ``output_tokens`` is
        then exactly ``max_new_tokens``. A stop token drawn as the last allowed token is
        ``"stop"`` (the model ended on its own), also with ``max_new_tokens`` tokens.
        """

    def report(self) -> dict[str, Any]:
        """Events worth keeping from the last ``generate`` (retries, OOM halvings, ...).

        Called at the end of each cell, successful or not; the result is stored in the
        manifest's cell entry under ``backend_report``. Must be JSON-serializable.
        """
        return {}

    def close(self) -> None:
        """Release the model."""


class Corpus(_Described, ABC):
    """A source of prompts. Yields them deterministically for a selection."""

    dataset: ClassVar[str]
    source_note: ClassVar[str] = ""
    license: ClassVar[str] = ""
    size: ClassVar[str] = ""
    default_split: ClassVar[str] = "full"

    def __init__(self, selection: CorpusSelection) -> None:
        self.selection = selection

    @property
    def split(self) -> str:
        return self.selection.split or self.default_split

    def version(self) -> str:
        """A version of the corpus content; it enters the config hash."""
        return "1"

    def dataset_name(self) -> str:
        """The stored dataset name (a generic corpus may take it from its options)."""
        return self.dataset

    @abstractmethod
    def iter_prompts(self) -> Iterator[Prompt | Rejection]:
        """Yield prompts (and rejections, never exceptions, for bad records) in a fixed order."""


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


class Metric(_Described, ABC):
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


class Predictor(_Described, ABC):
    """A response-length predictor: learns one per-prompt target from prompt features.

    ``fit`` and ``predict`` see rows of the prompts table (``prompt_text``, ``model``,
    ``dataset``, ``input_size``, ``category``, ...) as a pyarrow Table; the target is
    one number per row (mean length, p50, p99, ...). Bucket targets are predicted as
    numbers and bucketed by the caller, so every predictor serves every target.
    """

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    @abstractmethod
    def fit(self, rows: Any, target: np.ndarray) -> None:
        """Learn from the prompts-table rows ``rows`` (a pyarrow Table) and their targets."""

    @abstractmethod
    def predict(self, rows: Any) -> np.ndarray:
        """One predicted value per row of ``rows``."""


@dataclass(frozen=True)
class Preset:
    """A named run-spec fragment: models, corpora and generation settings.

    ``castillo run --preset NAME`` starts from it; every option given on the command
    line overrides the preset's. A model entry without a ``backend`` takes the one
    given with ``--backend``. Registered as an instance (``register(Preset(...))``).
    """

    name: str
    description: str = ""
    models: tuple[dict[str, Any], ...] = ()
    corpora: tuple[dict[str, Any], ...] = ()
    generation: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def spec_dict(self) -> dict[str, Any]:
        """The fragment as a run-spec dict (deep copies: callers may edit it)."""
        import copy

        data: dict[str, Any] = {}
        if self.models:
            data["models"] = copy.deepcopy(list(self.models))
        if self.corpora:
            data["corpora"] = copy.deepcopy(list(self.corpora))
        if self.generation:
            data["generation"] = dict(self.generation)
        return data


class Executor(_Described, ABC):
    """Where a run's pending cells are generated: in this process (``local``) or on a cluster.

    ``castillo run --executor NAME`` picks one; its options come from ``-E KEY=VALUE`` and
    the cluster shorthands (``--ray-address`` -> ``address``, ``--shard-size``,
    ``--max-retries``, ``-R KEY=VALUE`` -> ``resources``). The engine calls :meth:`check`
    before anything is displayed or written, then :meth:`execute` once it has checked the
    plan against the output and recorded the run. An executor drives the engine through its
    public API only (:class:`castillo_core.Engine`: ``prepare``, ``runner``/``runner_settings``,
    ``cell_started``, ``record``, ``stored``) and leaves the manifest to it: workers write
    parts, never the manifest.
    """

    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def check(self, out: str) -> None:
        """Refuse what cannot work (a missing library, an unreachable cluster) before anything starts."""

    @abstractmethod
    def execute(self, engine: Engine, summary: RunSummary) -> None:
        """Generate every pending cell of ``engine`` and put each cell's result into ``summary``."""


class View(_Described, ABC):
    """A derived view of a dataset's rows (CASTILLO v1's ``degenerate`` and ``sanitized``, ...).

    ``castillo_core.open_dataset(OUT).prompts(view=NAME, **options)`` and the exports use it.
    ``options`` are the view's own (a detector, a cap); validate them with ``parse_options``.
    """

    @abstractmethod
    def compute(self, prompts: Any, responses: Any, **options: Any) -> tuple[Any, Any]:
        """The view's (prompts, responses) pyarrow Tables from a dataset's; never modifies its input."""


PluginKind = Literal["backend", "corpus", "metric", "preset", "predictor", "executor", "view"]
CONTRACTS: dict[str, type] = {
    "backend": Backend,
    "corpus": Corpus,
    "metric": Metric,
    "preset": Preset,
    "predictor": Predictor,
    "executor": Executor,
    "view": View,
}
