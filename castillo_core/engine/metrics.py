"""The metrics of a run: which, with what options and version, and checks of what they return.

A third party's metric runs on every response castillo stores, so the core trusts none of
it: the names and options of ``--metric``/``-M`` are resolved and validated before any
model loads, each metric scores a small synthetic batch then (:func:`probe`), and every
value a metric returns is checked against the type its column declares (:func:`checked`)
before it is stored. A metric's failure is a :class:`MetricError`: one line naming the
metric, its distribution and the column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from castillo_core.api.columns import Column, ColumnType
from castillo_core.api.errors import ConfigError, PluginError
from castillo_core.api.metric import Metric, MetricContext, ResponseBatch

if TYPE_CHECKING:
    import numpy as np

    from castillo_core.plugins.manager import Plugins


class MetricError(PluginError):
    """A metric that raised or returned values its columns do not declare."""


@dataclass(frozen=True)
class MetricSetting:
    """One metric of a run: its class, validated options and where it comes from."""

    name: str
    cls: type[Metric]
    distribution: str
    version: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"metric {self.name} ({self.distribution})"

    def record(self) -> dict[str, Any]:
        """What is recorded with the data: a resume or rescore compares it."""
        return {"distribution": self.distribution, "version": self.version, "options": self.options}

    def instantiate(self, max_new_tokens: int, n: int) -> Metric:
        context = MetricContext(max_new_tokens=max_new_tokens, n=n, options=dict(self.options))
        try:
            return self.cls(context)
        except Exception as exc:
            raise MetricError(f"{self.label} failed to start: {type(exc).__name__}: {exc}") from exc


def resolve(
    plugins: Plugins, names: Sequence[str] | None, options: Mapping[str, Mapping[str, Any]]
) -> list[MetricSetting]:
    """The run's metrics: ``names`` (or every available default metric) with their options checked.

    Unknown metric names, options of a metric that is not part of the run and unknown
    option keys are refused here, before anything runs.
    """
    if names is None:
        entries = [e for e in plugins.entries("metric") if e.available and e.cls.runs_by_default()]
    else:
        entries = [plugins.get("metric", name) for name in names]
    chosen = {id(e): e for e in entries}
    by_name: dict[str, list[str]] = {}
    for entry in chosen.values():
        by_name.setdefault(entry.name, []).append(entry.distribution)
    for name, distributions in by_name.items():
        if len(distributions) > 1:  # their columns and records would collide in one dataset
            picks = " or ".join(f"--metric {d}:{name}" for d in sorted(distributions))
            raise ConfigError(
                f"two metrics named {name!r} would run ({', '.join(sorted(distributions))}); pick one: {picks}"
            )
    given: dict[int, dict[str, Any]] = {}
    for key, values in options.items():
        entry = plugins.get("metric", key)  # unknown or ambiguous names: one line, with the way out
        if id(entry) not in chosen:
            raise ConfigError(
                f"-M {key}.*: metric {entry.name} is not part of this run; add --metric {key} "
                f"(it runs by default only when it needs no option)"
            )
        given.setdefault(id(entry), {}).update(values)
    settings = []
    for entry in chosen.values():
        record = plugins.records.get(entry.plugin)
        version = entry.cls.version or (record.version if record else "?")
        options_given = given.get(id(entry), {})
        settings.append(
            MetricSetting(entry.name, entry.cls, entry.distribution, version, _options(entry.cls, options_given))
        )
    return settings


def _options(cls: type[Metric], given: Mapping[str, Any]) -> dict[str, Any]:
    if cls.Options is None:
        if given:
            raise ConfigError(
                f"metric {cls.name} takes no options (-M {cls.name}.{next(iter(given))}); see `castillo list metrics`"
            )
        return {}
    unknown = sorted(set(given) - set(cls.Options.model_fields))
    if unknown:
        known = ", ".join(sorted(cls.Options.model_fields)) or "none"
        raise ConfigError(f"metric {cls.name}: unknown option {unknown[0]!r} (-M {cls.name}.KEY=VALUE; known: {known})")
    from castillo_core.api.described import parse_options

    return parse_options(cls.Options, given, f"metric {cls.name}").model_dump(mode="json")


# -- checking what a metric returns -------------------------------------------------------

_KINDS = {"int64": "iu", "float64": "fiu", "bool": "b"}


def checked(setting: MetricSetting, values: Any, columns: Sequence[Column], expected: int, what: str) -> dict[str, Any]:
    """The values of ``columns`` from a metric's result, each checked against its declared type.

    Numbers come back as numpy arrays; a float NaN means "not computed" (stored as null);
    ``None`` is refused in every column: a metric says "unknown" with NaN, not with None.
    """
    if not isinstance(values, Mapping):
        raise MetricError(f"{setting.label} returned {type(values).__name__}, not a mapping of column -> values")
    out: dict[str, Any] = {}
    for column in columns:
        if column.name not in values:
            raise MetricError(f"{setting.label}: did not return its {what} column {column.name!r}")
        where = f"{setting.label}: {what} column {column.name!r} ({column.type})"
        out[column.name] = _check_column(values[column.name], column, expected, where)
    return out


def _check_column(value: Any, column: Column, expected: int, where: str) -> Any:
    import numpy as np

    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
        raise MetricError(f"{where}: expected a sequence of {expected} values, got {type(value).__name__}")
    if len(value) != expected:
        raise MetricError(f"{where}: returned {len(value)} values, expected {expected}")
    kinds = _KINDS.get(column.type)
    if kinds is not None:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.dtype.kind not in kinds:
            raise MetricError(f"{where}: {_describe(array)}")
        return array.astype({"b": bool, "iu": np.int64, "fiu": np.float64}[kinds], copy=False)
    items = list(value)
    if column.type == "string":  # None is a string column's "not computed" (stored as null)
        bad = next((v for v in items if v is not None and not isinstance(v, str)), _OK)
        if bad is not _OK:
            raise MetricError(f"{where}: holds {_kind(bad)}, expected text (or None)")
        return items
    inner = column.type[len("list<") : -1]
    for item in items:
        if not isinstance(item, (list, tuple, np.ndarray)):
            raise MetricError(f"{where}: holds {_kind(item)}, expected a list per row")
        _check_column(item, Column(column.name, cast(ColumnType, inner)), len(item), where)
    return items


_OK = object()


def _describe(array: np.ndarray) -> str:
    """What is wrong with an array of the wrong kind, showing its first offending value."""
    values = array.ravel().tolist()
    if array.dtype.kind in "USO":
        bad = next((v for v in values if v is None or not isinstance(v, (bool, int, float))), values[0])
        return f"holds {_kind(bad)}"
    names = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "c": "complex numbers"}
    return f"holds {names.get(array.dtype.kind, str(array.dtype))} (e.g. {values[0]!r})"


def _kind(value: Any) -> str:
    if value is None:
        return "None (use NaN for 'not computed')"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{type(value).__name__} {value!r:.40}"


# -- running metrics ------------------------------------------------------------------------


def score_all(
    batch: ResponseBatch, metrics: Sequence[tuple[MetricSetting, Metric]], n_prompts: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Every metric's checked response and prompt values; metrics that fail are left out.

    Returns the values and, per failed metric, its one-line error: the caller stores what
    succeeded (no completion is lost) and then stops the run with the error.
    """
    response_values: dict[str, Any] = {}
    prompt_values: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for setting, metric in metrics:
        try:
            scores = checked(
                setting, _call(setting, metric.score, batch), metric.response_columns(), len(batch), "response"
            )
            batch._columns.update(scores)
            aggregates = checked(
                setting, _call(setting, metric.aggregate, batch), metric.prompt_columns(), n_prompts, "prompt"
            )
        except MetricError as exc:
            failures[setting.name] = str(exc)
            for name in [c.name for c in metric.response_columns()]:
                batch._columns.pop(name, None)
            continue
        response_values.update(scores)
        prompt_values.update(aggregates)
    return response_values, prompt_values, failures


def _call(setting: MetricSetting, method: Any, batch: ResponseBatch) -> Any:
    try:
        return method(batch)
    except MetricError:
        raise
    except Exception as exc:  # a third party's bug, named
        raise MetricError(f"{setting.label}: {method.__name__}() raised {type(exc).__name__}: {exc}") from exc


_PROBE_TEXTS = (
    "A short answer.",
    "",
    "def f(x):\n    return x * 2\n",
    "Ünïcödé and emoji 🙂 text",
    "loop " * 40,
    "The end.",
)


def probe(settings: Sequence[MetricSetting], max_new_tokens: int, n: int) -> None:
    """Score a small synthetic batch with every metric, before any model loads.

    Catches a metric that cannot start with its options, raises, or returns values its
    columns do not declare, while nothing has been generated yet.
    """
    import numpy as np

    n = max(1, min(n, 4))
    texts = [_PROBE_TEXTS[i % len(_PROBE_TEXTS)] for i in range(3 * n)]
    tokens = np.array([min(len(t.split()) + 1, max_new_tokens) for t in texts], dtype=np.int64)
    tokens[-1] = max_new_tokens
    reasons = ["length" if t >= max_new_tokens else "stop" for t in tokens]
    offsets = np.arange(0, 3 * n + 1, n, dtype=np.int64)
    batch = ResponseBatch(texts, tokens, reasons, offsets, max_new_tokens)
    metrics = [(s, s.instantiate(max_new_tokens, n)) for s in settings]
    _, _, failures = score_all(batch, metrics, 3)
    if failures:
        first = next(iter(failures.values()))
        raise MetricError(f"{first} (found on a test batch, before any model was loaded)")
