"""castillo from Python: run a grid with the same options as ``castillo run``, open a dataset in one call.

For notebooks and pipelines::

    import castillo_core as castillo

    summary = castillo.run(backend="fake", corpus="tiny", n=4, limit=5, out="runs/nb")
    data = castillo.open_dataset("runs/nb")
    prompts = data.to_pandas()                       # one row per prompt
    joined = data.prompts(with_responses=True)       # + a list of its responses per prompt
    clean = data.prompts(view="sanitized")           # a view registered by a plugin (castillo-views)

The options of :func:`run` are those of ``castillo run`` by their long names, with lists
for the repeatable ones (``model=``/``models=``, ``corpus=``/``corpora=``, ``metric=``) and
dicts for the ``KEY=VALUE`` ones (``backend_options``, ``corpus_options``, ``metric_options``,
``executor_options``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from castillo_core.api.errors import ConfigError

_REPEATED = {"model": "models", "corpus": "corpora", "metric": "metrics"}
_KV = {
    "backend_options": "backend_options",
    "corpus_options": "corpus_options",
    "executor_options": "executor_options",
    "task_resources": "task_resources",
}


def run(
    spec: str | Path | Mapping[str, Any] | None = None,
    *,
    progress: Any = None,
    flush_every: int = 20_000,
    **options: Any,
) -> Any:
    """Run a grid and return its :class:`castillo_core.RunSummary` (raises what ``castillo run`` reports).

    ``spec`` is a grid file (path), a dict shaped like one, or nothing (options only);
    ``progress`` a :class:`castillo_core.Progress` (default: quiet).
    """
    from castillo_core.cli.run import _executor, build_spec_dict
    from castillo_core.engine.engine import Engine
    from castillo_core.engine.plan import load_spec
    from castillo_core.engine.progress import Progress
    from castillo_core.plugins.manager import get_plugins

    opts = _flags(options)
    base: dict[str, Any] | None = None
    if isinstance(spec, Mapping):
        base = dict(spec)
    elif spec is not None:
        opts["config_path"] = str(spec)
    data, where = build_spec_dict(opts, base)
    for metric, values in (options.get("metric_options") or {}).items():
        data.setdefault("metric_options", {}).setdefault(metric, {}).update(values)
    loaded = load_spec(data, where)
    engine = Engine(
        loaded,
        get_plugins(),
        progress=progress or Progress(),
        flush_responses=flush_every,
        executor=_executor(opts, loaded.out),
    )
    return engine.run()


def _flags(options: Mapping[str, Any]) -> dict[str, Any]:
    """Python keyword options as the CLI's parsed flags."""
    opts: dict[str, Any] = {}
    for key, value in options.items():
        if key == "metric_options":
            continue
        if key in _REPEATED:
            opts[_REPEATED[key]] = (value,) if isinstance(value, str) else tuple(value)
        elif key in _REPEATED.values():
            opts[key] = (value,) if isinstance(value, str) else tuple(value)
        elif key in _KV:
            if not isinstance(value, Mapping):
                raise ConfigError(f"run({key}=...): expected a dict of option -> value")
            opts[_KV[key]] = tuple(f"{k}={_json(v)}" for k, v in value.items())
        else:
            opts[key] = value
    return opts


def _json(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class Dataset:
    """A castillo output opened for reading (see :func:`open_dataset`)."""

    out: Path

    def prompts(
        self,
        view: str = "original",
        columns: Sequence[str] | None = None,
        with_responses: bool = False,
        **view_options: Any,
    ) -> Any:
        """The prompts table (pyarrow), or one of its views, optionally with each prompt's responses.

        ``view`` other than ``original`` is computed by a view plugin (``castillo list views``),
        with ``view_options`` (e.g. ``detector="repetition"``). ``with_responses`` adds a
        ``responses`` column: per prompt, the list of its response rows (in sample order).
        """
        from castillo_core.engine.dataset import read_table

        wanted = None if columns is None else [*columns, *(c for c in ("sample_id", "config_hash") if c not in columns)]
        table = read_table(self.out, "prompts", columns=None if view != "original" else wanted)
        responses = None
        if view != "original":
            table, responses = self._view(view, table, view_options)
            if columns is not None:
                table = table.select([c for c in wanted or [] if c in table.column_names])
        if with_responses:
            table = _join(table, responses if responses is not None else self.responses())
        return table

    def responses(self, columns: Sequence[str] | None = None) -> Any:
        """The responses table (pyarrow): one row per completion."""
        from castillo_core.engine.dataset import read_table

        return read_table(self.out, "responses", columns=columns)

    def _view(self, name: str, prompts: Any, options: Mapping[str, Any]) -> tuple[Any, Any]:
        from castillo_core.plugins.manager import get_plugins

        view = get_plugins().get("view", name).cls()
        return view.compute(prompts, self.responses(), **options)

    def to_pandas(self, **kwargs: Any) -> Any:
        """The prompts table (or a view: same arguments as :meth:`prompts`) as a pandas DataFrame."""
        return self.prompts(**kwargs).to_pandas()

    def to_polars(self, **kwargs: Any) -> Any:
        """The prompts table (or a view) as a polars DataFrame (needs polars)."""
        try:
            import polars as pl
        except ImportError:
            raise ConfigError("to_polars() needs polars: pip install polars") from None
        return pl.from_arrow(self.prompts(**kwargs))

    @property
    def manifest(self) -> Any:
        from castillo_core.engine.manifest import read_manifest

        return read_manifest(self.out)

    def summary(self) -> list[dict[str, Any]]:
        """Per model x dataset: prompts, mean length, mean std, CV, share capped (``castillo show``)."""
        from castillo_core.engine.dataset import read_table, summarize

        columns = ["model", "dataset", "output_mean", "output_std", "n_length_capped", "n_samples"]
        return summarize(read_table(self.out, "prompts", columns=columns))


def open_dataset(out: str | Path) -> Dataset:
    """Open a castillo output for reading; it is checked like every reader checks it."""
    from castillo_core.engine.store import Store

    path = Path(out)
    if not (path / "prompts").is_dir():
        from castillo_core.api.errors import StoreError

        raise StoreError(f"{path} is not a castillo output (no prompts/ table)")
    Store(path).check()
    return Dataset(path)


def _join(prompts: Any, responses: Any) -> Any:
    """``prompts`` with a ``responses`` list column: each prompt's response rows in sample order."""
    import itertools

    import pyarrow as pa
    import pyarrow.compute as pc

    key = "\x00"
    response_keys = pc.binary_join_element_wise(responses["sample_id"], responses["config_hash"], key)
    order = pc.sort_indices(
        pa.table({"k": response_keys, "i": responses["sample_index"]}), [("k", "ascending"), ("i", "ascending")]
    )
    responses = responses.take(order)
    response_keys = response_keys.take(order)
    prompt_keys = pc.binary_join_element_wise(prompts["sample_id"], prompts["config_hash"], key).to_pylist()
    groups: dict[str, list[int]] = {}
    for index, k in enumerate(response_keys.to_pylist()):
        groups.setdefault(k, []).append(index)
    rows = [groups.get(k, []) for k in prompt_keys]
    offsets = pa.array([0, *itertools.accumulate(len(r) for r in rows)], type=pa.int32())
    flat = responses.take(pa.array([i for r in rows for i in r], type=pa.int64()))
    struct = pa.StructArray.from_arrays([c.combine_chunks() for c in flat.columns], names=flat.column_names)
    return prompts.append_column("responses", pa.ListArray.from_arrays(offsets, struct))
