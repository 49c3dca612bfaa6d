"""The three contracts a plugin implements: Backend, Corpus and Metric.

A plugin registers a *class*. Class attributes describe it (name, what it needs, how
to install that) so that listing plugins never instantiates them, and never imports
the heavy library behind them: those imports belong inside ``open``/``generate``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:  # numpy loads when a metric runs, not when castillo lists its plugins
    import numpy as np

    from castillo_core.engine.engine import Engine
    from castillo_core.engine.work import RunSummary

from castillo_core.api.described import Described
from castillo_core.api.errors import ConfigError
from castillo_core.api.metric import Metric
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


class Backend(Described, ABC):
    """An inference backend: opens one model, renders prompts, samples completions.

    Lifecycle, driven by the engine: ``__init__`` (cheap) -> ``open`` (load the model,
    once) -> for each cell of that model: ``sampling`` then ``render`` then
    ``generate`` -> ``close``.
    """

    aliases: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str | None] = None
    counting_modes: ClassVar[tuple[str, ...]] = ("exact",)
    """The ``GenerationConfig.counting`` modes ``generate`` implements (``"v1"``: see :func:`v1_output_tokens`)."""

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

    @classmethod
    def public_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options as they may be recorded (manifest, logs): override to hide secrets in them.

        The core also redacts URL credentials everywhere it records text; a backend whose
        options carry other secrets says so here.
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

    def cut_prompts(self, texts: Sequence[str], max_tokens: int) -> list[str | None]:
        """CASTILLO v1's truncation (``--truncation v1``): each raw text cut to ``max_tokens`` ids, or None.

        Called on the opened model before ``render``, with the raw prompt texts. A text
        whose ids (the tokenizer's own special tokens included) exceed ``max_tokens``
        becomes the decoding of its first ``max_tokens`` ids; one that fits is ``None``.
        Backends with a Hugging Face-style tokenizer use :func:`cut_with_tokenizer`. The
        default refuses: a backend that cannot tokenize (an HTTP server) cannot cut as v1 did.
        """
        raise ConfigError(
            f"backend {self.name} cannot cut prompts with the model's tokenizer, which --truncation v1 needs; "
            "use --truncation template (castillo's own truncation) or a backend that tokenizes "
            "(transformers, vllm, llamacpp)"
        )

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


class Corpus(Described, ABC):
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


class Predictor(Described, ABC):
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


class Executor(Described, ABC):
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


class View(Described, ABC):
    """A derived view of a dataset's rows (CASTILLO v1's ``degenerate`` and ``sanitized``, ...).

    ``castillo_core.open_dataset(OUT).prompts(view=NAME, **options)`` computes it; ``castillo list
    views`` lists the installed ones.
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
