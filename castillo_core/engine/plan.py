"""Run specs (CLI flags or a TOML grid file) and their expansion into cells.

A cell is one (model spec, corpus selection, generation config). Its ``config_hash``
covers everything that changes its numbers: backend, model and revision, dtype, the
backend options that matter, every sampling parameter, caps, seed, and the corpus with
its source, split, sampling seed, options and version. The prompt ``limit`` is left
out on purpose: a larger limit extends a run instead of being refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from castillo_core.api.contracts import Backend, Corpus
from castillo_core.api.errors import ConfigError
from castillo_core.api.ids import model_name
from castillo_core.api.records import CorpusSelection, GenerationConfig, ModelSpec
from castillo_core.api.redact import redact_value
from castillo_core.engine.prompts import resolve_source, source_digest
from castillo_core.engine.schema import SCHEMA_VERSION
from castillo_core.engine.store import segment
from castillo_core.plugins import Plugins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ModelEntry(BaseModel):
    """One model of a grid: its backend, id or path, and options."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = None
    revision: str | None = None
    dtype: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # The model's default sampling values, pinned: under model_defaults they stand in for what
    # the backend would read from the model's generation config at load time (values set for
    # the run, by flags or a [generation] table, still override them). Per corpus (by corpus
    # or dataset name), values over those.
    sampling_defaults: dict[str, float | int] = Field(default_factory=dict)
    sampling_defaults_by_corpus: dict[str, dict[str, float | int]] = Field(default_factory=dict)

    def spec(self) -> ModelSpec:
        return ModelSpec(**self.model_dump(exclude={"sampling_defaults", "sampling_defaults_by_corpus"}))

    @model_validator(mode="after")
    def _known_sampling_keys(self) -> ModelEntry:
        for table in (self.sampling_defaults, *self.sampling_defaults_by_corpus.values()):
            unknown = sorted(set(table) - set(SAMPLING_KEYS))
            if unknown:
                raise ValueError(f"sampling_defaults: unknown key(s) {unknown}; expected some of {list(SAMPLING_KEYS)}")
        return self


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
"""The generation settings a model's own generation config supplies under ``model_defaults``."""


class CorpusEntry(BaseModel):
    """One corpus of a grid and which of its prompts to use."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str | None = None
    split: str | None = None
    limit: int | None = Field(None, ge=0)
    sample_seed: int = 42
    options: dict[str, Any] = Field(default_factory=dict)


class RunSpec(BaseModel):
    """A whole run: the grid of models x corpora under one generation config."""

    model_config = ConfigDict(extra="forbid")

    out: str = "runs/castillo"
    models: list[ModelEntry] = Field(min_length=1)
    corpora: list[CorpusEntry] = Field(min_length=1)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    metrics: list[str] | None = None
    metric_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    keep_text: bool = True
    strict: bool = False


def _format_validation(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: key {key}: {err['msg']}")
    return "\n".join(lines)


def load_spec(data: dict[str, Any], where: str) -> RunSpec:
    """Validate a run spec dict; errors name ``where`` (a file or "command line") and the key."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, where)) from None


def read_grid_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML grid file into a dict (validated later, with the file named in errors)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"grid file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"grid file {path} is a directory") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"grid file {path} is not valid TOML (UTF-8 text): {exc}") from None
    except OSError as exc:
        raise ConfigError(f"grid file {path} cannot be read: {exc.strerror or exc}") from None
    for key, kind in (("models", list), ("corpora", list), ("generation", dict), ("metric_options", dict)):
        if key in data and not isinstance(data[key], kind):
            table = "[[" + key + "]] tables" if kind is list else "a [" + key + "] table"
            raise ConfigError(f"grid file {path}: key {key}: expected {table}, got {type(data[key]).__name__}")
    for key in ("models", "corpora"):
        for number, entry in enumerate(data.get(key, []), 1):
            if not isinstance(entry, dict):
                raise ConfigError(
                    f"grid file {path}: {key} entry {number}: expected a table, got {type(entry).__name__}"
                )
    return data


@dataclass(frozen=True)
class Cell:
    """One unit of work: a model, a corpus selection, a generation config."""

    spec: ModelSpec
    selection: CorpusSelection
    generation: GenerationConfig
    backend_cls: type[Backend]
    corpus_cls: type[Corpus]
    model_id: str
    dataset: str
    config: dict[str, Any]
    config_hash: str

    @property
    def model(self) -> str:
        """The stored model name ("/" replaced by "--")."""
        return model_name(self.model_id)

    @property
    def model_key(self) -> tuple[str, str]:
        """Cells with equal keys run on one opened model (same backend, same model spec)."""
        return (self.backend_cls.name, self.spec.model_dump_json())

    @property
    def label(self) -> str:
        return f"{self.model} x {self.dataset}"

    def corpus(self) -> Corpus:
        return self.corpus_cls(self.selection)


def config_hash(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def expand(spec: RunSpec, plugins: Plugins) -> list[Cell]:
    """Expand the grid into cells, in model-major order (each model is opened once).

    Names that will name directories (model, dataset) are checked here, before anything runs.
    """
    cells: list[Cell] = []
    for model_entry in spec.models:
        backend_cls = plugins.backend(model_entry.backend)
        model_spec = model_entry.spec().model_copy(update={"backend": backend_cls.name})
        model_id = backend_cls.model_id(model_spec)
        for corpus_entry in spec.corpora:
            cells.append(_cell(spec, plugins, backend_cls, model_spec, model_id, corpus_entry, model_entry))
    seen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        segment(cell.model, "model")
        segment(cell.dataset, "dataset")
        key = (cell.model, cell.dataset)
        if key in seen and seen[key].config_hash != cell.config_hash:
            raise ConfigError(
                f"the grid has two cells for model {cell.model} x dataset {cell.dataset} with different "
                f"configs; put them in different outputs"
            )
        seen[key] = cell
    return list({(c.model, c.dataset): c for c in cells}.values())


def _cell(
    spec: RunSpec,
    plugins: Plugins,
    backend_cls: type[Backend],
    model_spec: ModelSpec,
    model_id: str,
    corpus_entry: CorpusEntry,
    model_entry: ModelEntry | None = None,
) -> Cell:
    corpus_cls = plugins.corpus(corpus_entry.name)
    selection = CorpusSelection(
        corpus=corpus_cls.name,
        source=resolve_source(corpus_entry.source),
        split=corpus_entry.split,
        limit=corpus_entry.limit,
        sample_seed=corpus_entry.sample_seed,
        options=corpus_entry.options,
        strict=spec.strict,
    )
    corpus = corpus_cls(selection)
    generation = cell_generation(spec.generation, model_entry, corpus_cls.name, corpus.dataset_name())
    config = {
        "schema": SCHEMA_VERSION.split(".")[0],
        "backend": backend_cls.name,
        "model": model_id,
        "revision": model_spec.revision,
        "dtype": model_spec.dtype,
        # what changes the numbers, as it may be recorded (no secret enters a config or its hash)
        "backend_options": redact_value(backend_cls.public_options(backend_cls.hashed_options(model_spec.options))),
        "corpus": {
            "name": corpus_cls.name,
            "dataset": corpus.dataset_name(),
            "source": selection.source,
            # the source's content: a file edited in place is a different selection, refused with the diff
            "content": source_digest(selection.source),
            "split": corpus.split,
            "sample_seed": selection.sample_seed,
            "options": selection.options,
            "version": corpus.version(),
        },
        "generation": hashed_generation(generation),
    }
    return Cell(
        spec=model_spec,
        selection=selection,
        generation=generation,
        backend_cls=backend_cls,
        corpus_cls=corpus_cls,
        model_id=model_id,
        dataset=corpus.dataset_name(),
        config=config,
        config_hash=config_hash(config),
    )


def cell_generation(
    generation: GenerationConfig, entry: ModelEntry | None, corpus: str, dataset: str
) -> GenerationConfig:
    """A cell's generation config: the run's, with the model entry's pinned sampling defaults where it sets none.

    Pinned defaults apply under ``model_defaults`` only (they stand in for the model's own
    generation config); a value the run sets explicitly wins, as it wins over a model's own.
    """
    if entry is None or not generation.model_defaults:
        return generation
    pinned = dict(entry.sampling_defaults)
    for key in (corpus, dataset):
        pinned.update(entry.sampling_defaults_by_corpus.get(key, {}))
    update = {k: v for k, v in pinned.items() if getattr(generation, k) is None}
    if not update:
        return generation
    try:
        return GenerationConfig.model_validate({**generation.model_dump(), **update})
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, f"model {entry.model} x {dataset}: sampling_defaults")) from None


_HASHED_ONLY_WHEN_SET = {"truncation": "template", "counting": "exact"}


def hashed_generation(generation: GenerationConfig) -> dict[str, Any]:
    """The generation settings in a cell's config: every field, less those at a default that predates them.

    ``truncation`` and ``counting`` enter the config only when set otherwise, so the cells
    of outputs written before they existed keep their config hash.
    """
    data = generation.model_dump()
    for key, default in _HASHED_ONLY_WHEN_SET.items():
        if data.get(key) == default:
            del data[key]
    return data


def describe_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ between two configs, as "key: old -> new" lines."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(describe_difference(a, b, prefix=f"{name}."))
        elif a != b:
            lines.append(f"{name}: {a!r} -> {b!r}")
    return lines
