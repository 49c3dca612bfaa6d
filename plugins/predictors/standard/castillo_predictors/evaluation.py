"""Training and evaluating response-length predictors on a castillo dataset.

A predictor (a :class:`~castillo_core.Predictor` plugin) learns one number per
⟨prompt, model⟩ row of the prompts table from that row's prompt features. This module
holds what every predictor shares, so that all of them are measured the same way:

- the targets (mean, p50, p99, max length, and a length bucket),
- the split, by prompt and never by sample, so that no test prompt is seen in training
  under another model or config,
- the metrics, computed per model and overall, always beside the per-(model, dataset)
  mean baseline, which the core computes itself (the core imports no plugin),
- saving and loading fitted predictors (pickle).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from castillo_core import ConfigError, PluginError, Predictor, StoreError

log = logging.getLogger(__name__)

TARGETS = ("mean", "p50", "p99", "max", "bucket")
# Upper-open bucket edges in tokens: [0,64) [64,128) [128,256) [256,512) [512,1024)
# [1024,2048) [2048,inf). Powers of two because what a scheduler reserves (KV-cache
# blocks, batch slots) grows geometrically with length, and v1's lengths span 1..15,000.
DEFAULT_BUCKET_EDGES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
METRICS = ("mae", "rmse", "r2", "acc50", "acc100", "bucket_acc", "tau")
METRIC_LABELS = {
    "mae": "MAE",
    "rmse": "RMSE",
    "r2": "R2",
    "acc50": "Acc-50",
    "acc100": "Acc-100",
    "bucket_acc": "Bucket",
    "tau": "tau",
}
BASELINE = "baseline"  # the name the per-(model, dataset) mean baseline goes by in results
FITTED_FORMAT = "castillo-predictors/1"

# What predictors may read, and what targets come from. The long response texts stay on
# disk: predictors see only what a scheduler knows before generation.
_FEATURE_COLUMNS = ("prompt_id", "model", "dataset", "split", "prompt_text", "input_size", "category")
_TARGET_COLUMNS = ("output_mean", "output_percentiles", "output_max", "output_sizes")
_EVAL_SPLITS = ("test", "validate", "validation", "val", "dev")


@dataclass(frozen=True)
class SplitSpec:
    """How prompts are split when the dataset has only one split of its own."""

    seed: int = 0
    test_share: float = 0.2


def load_rows(path: str | Path) -> pa.Table:
    """The prompts table of a castillo output: feature and target columns, rows with lengths."""
    from castillo_core import read_table

    table = read_table(path, "prompts", columns=[*_FEATURE_COLUMNS, *_TARGET_COLUMNS])
    if table.num_rows == 0:
        raise StoreError(f"{path}: the prompts table is empty; nothing to learn from")
    missing = [c for c in ("prompt_id", "model", "dataset", "output_mean") if c not in table.column_names]
    if missing:
        raise StoreError(f"{path}: the prompts table lacks column(s) {', '.join(missing)}")
    keep = pc.is_valid(table.column("output_mean"))
    if not pc.all(keep).as_py():
        log.info("dropping %d row(s) without output_mean", table.num_rows - pc.sum(keep).as_py())
        table = table.filter(keep)
    return table


def _column(rows: pa.Table, name: str) -> np.ndarray:
    return rows.column(name).to_numpy(zero_copy_only=False)


def target_values(rows: pa.Table, target: str) -> np.ndarray:
    """One target value per row, in tokens (``bucket`` is learned on the mean length)."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target in ("mean", "bucket"):
        return _column(rows, "output_mean").astype(np.float64)
    if target in ("p50", "p99"):
        if "output_percentiles" in rows.column_names:
            values = pc.struct_field(rows.column("output_percentiles"), target)
            if values.null_count == 0:
                return values.to_numpy(zero_copy_only=False).astype(np.float64)
        return _from_sizes(rows, lambda s: float(np.percentile(s, 50 if target == "p50" else 99)), target)
    if "output_max" in rows.column_names and rows.column("output_max").null_count == 0:
        return _column(rows, "output_max").astype(np.float64)
    return _from_sizes(rows, lambda s: float(np.max(s)), target)


def _from_sizes(rows: pa.Table, reduce: Any, target: str) -> np.ndarray:
    if "output_sizes" not in rows.column_names:
        raise StoreError(f"target {target}: the prompts table has neither its column nor output_sizes")
    return np.array([reduce(s) if s else np.nan for s in rows.column("output_sizes").to_pylist()], dtype=np.float64)


def bucketize(values: np.ndarray, edges: Sequence[float] = DEFAULT_BUCKET_EDGES) -> np.ndarray:
    """The bucket index of each length: ``i`` means ``edges[i-1] <= value < edges[i]``."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")


def _hash_unit(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


def split_rows(rows: pa.Table, spec: SplitSpec = SplitSpec()) -> tuple[np.ndarray, str]:
    """A boolean test mask over ``rows`` and a sentence saying how it was made.

    Per dataset: where the rows carry more than one split of their own (train/validate/
    test), the test split (else validate) is the test side and the rest trains. Otherwise
    that dataset's distinct prompt ids are ordered by a seeded hash and the first
    ``round(test_share * n)`` are test prompts: exact shares, and the same prompt is on the
    same side for every model, so nothing about a test prompt leaks into training.
    """
    if not 0.0 < spec.test_share < 1.0:
        raise ConfigError(f"--test-share {spec.test_share}: must be between 0 and 1")
    datasets = _column(rows, "dataset").astype(str)
    prompt_ids = _column(rows, "prompt_id").astype(str)
    splits = (
        np.array([s or "" for s in rows.column("split").to_pylist()], dtype=object)
        if "split" in rows.column_names
        else np.full(rows.num_rows, "", dtype=object)
    )
    test = np.zeros(rows.num_rows, dtype=bool)
    notes = []
    for name in sorted(set(datasets.tolist())):
        in_ds = datasets == name
        own = sorted(set(splits[in_ds].tolist()) - {""})
        held = next((s for s in _EVAL_SPLITS if s in own), None)
        if len(own) > 1 and held is not None:
            test |= in_ds & (splits == held)
            notes.append(f"{name}: own splits ({held} held out)")
            continue
        ids = sorted(set(prompt_ids[in_ds].tolist()), key=lambda p: (_hash_unit(spec.seed, p), p))
        n_test = round(spec.test_share * len(ids))
        if len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        test |= in_ds & np.isin(prompt_ids, np.array(ids[:n_test], dtype=object))
        notes.append(f"{name}: {n_test}/{len(ids)} prompts held out")
    how = f"by prompt_id, seed {spec.seed}, test share {spec.test_share:g} where a dataset has one split"
    return test, f"{how}; " + "; ".join(notes)


# -- metrics -------------------------------------------------------------------------


def _tied_pairs(*columns: np.ndarray) -> int:
    """Pairs of rows equal in every given column."""
    if len(columns[0]) == 0:
        return 0
    _, counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j] (integers), by a vectorized bottom-up merge.

    Each level merges neighbouring sorted blocks with one global sort (block offsets keep
    the blocks apart) and counts, for each right-block element, the larger left-block
    elements with ``searchsorted``: O(n log² n) in numpy, no Python loop over elements.
    """
    a = np.asarray(values, dtype=np.int64)
    n = len(a)
    if n < 2:
        return 0
    a = a - a.min()
    span = int(a.max()) + 1
    idx = np.arange(n, dtype=np.int64)
    total = 0
    width = 1
    while width < n:
        block = idx // (2 * width)
        right = (idx // width) % 2 == 1
        key = block * span + a
        left_keys = key[~right]
        upto = np.searchsorted(left_keys, key[right], side="right")
        end = np.searchsorted(left_keys, (block[right] + 1) * span, side="left")
        total += int((end - upto).sum())
        a = np.sort(key) - block * span
        width *= 2
    return total


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two orderings (ties handled as scipy's ``kendalltau`` does).

    Knight's O(n log n)-style algorithm in numpy: sort by (x, y), count the discordant
    pairs as inversions of y. NaN when either side is constant.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    n0 = n * (n - 1) // 2
    n1, n2, n3 = _tied_pairs(xs), _tied_pairs(ys), _tied_pairs(xs, ys)
    denominator = float(n0 - n1) * float(n0 - n2)
    if denominator <= 0:
        return float("nan")
    discordant = _inversions(np.unique(ys, return_inverse=True)[1])
    return float((n0 - n1 - n2 + n3 - 2 * discordant) / np.sqrt(denominator))


def score(true: np.ndarray, pred: np.ndarray, edges: Sequence[float] = DEFAULT_BUCKET_EDGES) -> dict[str, float]:
    """Every metric of ``pred`` against ``true`` (lengths in tokens)."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if len(true) == 0:
        return dict.fromkeys(METRICS, float("nan"))
    err = np.abs(pred - true)
    spread = float(((true - true.mean()) ** 2).sum())
    return {
        "mae": float(err.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": 1.0 - float((err**2).sum()) / spread if spread > 0 else float("nan"),
        "acc50": float((err <= 50).mean()),
        "acc100": float((err <= 100).mean()),
        "bucket_acc": float((bucketize(pred, edges) == bucketize(true, edges)).mean()),
        "tau": kendall_tau(pred, true),
    }


def group_mean_baseline(train: pa.Table, y_train: np.ndarray, rows: pa.Table) -> np.ndarray:
    """The per-(model, dataset) mean of the training target (per model, then overall, for unseen ones)."""
    tm, td = _column(train, "model").astype(str), _column(train, "dataset").astype(str)
    sums: dict[tuple[str, str], list[float]] = {}
    for key, value in zip(zip(tm.tolist(), td.tolist(), strict=True), y_train.tolist(), strict=True):
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += value
        acc[1] += 1
    per_model: dict[str, list[float]] = {}
    for (model, _), (total, count) in sums.items():
        acc = per_model.setdefault(model, [0.0, 0.0])
        acc[0] += total
        acc[1] += count
    overall = float(np.mean(y_train)) if len(y_train) else 0.0
    out = np.empty(rows.num_rows, dtype=np.float64)
    for i, key in enumerate(
        zip(_column(rows, "model").astype(str).tolist(), _column(rows, "dataset").astype(str), strict=True)
    ):
        if key in sums:
            out[i] = sums[key][0] / sums[key][1]
        elif key[0] in per_model:
            out[i] = per_model[key[0]][0] / per_model[key[0]][1]
        else:
            out[i] = overall
    return out


# -- predictors ----------------------------------------------------------------------


def parse_predictor_options(values: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` pairs (values read as JSON when they parse) into per-predictor options."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in values:
        head, sep, raw = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not name or not key:
            raise ConfigError(f"-P {item!r}: expected PREDICTOR.KEY=VALUE, e.g. tfidf-ridge.alpha=3")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name.strip(), {})[key.strip()] = value
    return out


def resolve_predictors(names: Sequence[str]) -> tuple[list[type[Predictor]], list[str]]:
    """The predictor classes to use, and notes on installed ones left out as unavailable.

    Named ones must be available (else a PluginError says what to install); with no
    names, every installed predictor that is available is used.
    """
    from castillo_core import get_plugins

    plugins = get_plugins()
    notes: list[str] = []
    if names:
        classes = []
        for name in dict.fromkeys(names):
            entry = plugins.get("predictor", name)
            missing = entry.missing()
            if missing:
                hint = getattr(entry.cls, "install_hint", "") or f"pip install {' '.join(missing)}"
                raise PluginError(f"predictor {entry.name} needs {', '.join(missing)}: {hint}")
            classes.append(entry.cls)
        return classes, notes
    classes = []
    for entry in plugins.entries("predictor"):
        if entry.missing():
            hint = getattr(entry.cls, "install_hint", "") or f"pip install {' '.join(entry.missing())}"
            notes.append(f"predictor {entry.name} left out: needs {', '.join(entry.missing())} ({hint})")
        else:
            classes.append(entry.cls)
    if not classes:
        raise PluginError("no length predictor is installed: pip install -e plugins/predictors/standard")
    return classes, notes


def fit_predictors(
    classes: Sequence[type[Predictor]], rows: pa.Table, y: np.ndarray, options: Mapping[str, Mapping[str, Any]]
) -> dict[str, Predictor]:
    """Instantiate and fit each predictor on ``rows``."""
    fitted: dict[str, Predictor] = {}
    for cls in classes:
        predictor = cls(options.get(cls.name, {}))
        log.info("fitting predictor %s on %d rows", cls.name, rows.num_rows)
        predictor.fit(rows, y)
        fitted[cls.name] = predictor
    unused = set(options) - set(fitted)
    if unused:
        raise ConfigError(f"-P options for predictor(s) not in use: {', '.join(sorted(unused))}")
    return fitted


def predict_checked(name: str, predictor: Predictor, rows: pa.Table) -> np.ndarray:
    """``predictor.predict(rows)``, checked to be one finite number per row."""
    pred = np.asarray(predictor.predict(rows), dtype=np.float64).reshape(-1)
    if len(pred) != rows.num_rows:
        raise PluginError(f"predictor {name} returned {len(pred)} values for {rows.num_rows} rows")
    if not np.all(np.isfinite(pred)):
        raise PluginError(f"predictor {name} returned non-finite values")
    return pred


# -- fitted files --------------------------------------------------------------------


def save_fitted(path: str | Path, bundle: Mapping[str, Any]) -> None:
    """Pickle fitted predictors and how they were trained (atomically: temp file, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as handle:
        pickle.dump({"format": FITTED_FORMAT, **bundle}, handle, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(target)


def load_fitted(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_fitted`. It is a pickle: load only files you trust."""
    source = Path(path)
    if not source.is_file():
        raise StoreError(f"{source}: no such fitted-predictor file (make one with `castillo predict fit`)")
    try:
        with source.open("rb") as handle:
            bundle = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise StoreError(
            f"{source}: cannot load fitted predictors ({type(exc).__name__}: {exc}); is the plugin that made "
            f"them installed?"
        ) from None
    if not isinstance(bundle, dict) or bundle.get("format") != FITTED_FORMAT:
        raise StoreError(f"{source}: not a castillo fitted-predictor file ({FITTED_FORMAT})")
    return bundle


# -- evaluation ----------------------------------------------------------------------


@dataclass
class Evaluation:
    """Metrics of every predictor, per scope (each model, then ``all``), beside the baseline."""

    dataset: str
    target: str
    split: str
    n_train: int
    n_test: int
    bucket_edges: tuple[float, ...]
    results: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def overall(self, predictor: str) -> dict[str, Any]:
        return next(r for r in self.results if r["predictor"] == predictor and r["scope"] == "all")

    def best(self) -> str | None:
        """The predictor with the lowest overall MAE (highest bucket accuracy for ``bucket``)."""
        names = [r["predictor"] for r in self.results if r["scope"] == "all"]
        if not names:
            return None
        if self.target == "bucket":
            return max(names, key=lambda n: self.overall(n)["bucket_acc"])
        return min(names, key=lambda n: self.overall(n)["mae"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "target": self.target,
            "split": self.split,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "bucket_edges": list(self.bucket_edges),
            "best": self.best(),
            "results": self.results,
            "notes": self.notes,
        }


def _scopes(rows: pa.Table, by: str) -> list[tuple[str, np.ndarray]]:
    everything = [("all", np.ones(rows.num_rows, dtype=bool))]
    if by == "none":
        return everything
    if by not in ("model", "dataset"):
        raise ConfigError(f"--by {by!r}: choose model, dataset or none")
    values = _column(rows, by).astype(str)
    return [(v, values == v) for v in sorted(set(values.tolist()))] + everything


def evaluate(
    path: str | Path,
    names: Sequence[str] = (),
    target: str = "mean",
    spec: SplitSpec = SplitSpec(),
    by: str = "model",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    fitted_file: str | Path | None = None,
    all_rows: bool = False,
    bucket_edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
) -> Evaluation:
    """Fit (or load) predictors and score them on the held-out prompts of ``path``.

    With ``fitted_file``, its predictors, target and split settings are used, and the
    test side is recomputed from the file's seed and share (``all_rows`` scores every
    row instead, for a dataset the predictors never saw). The baseline is always fitted
    on the training side of this dataset's split.
    """
    rows = load_rows(path)
    bundle = load_fitted(fitted_file) if fitted_file else None
    if bundle is not None:
        target = bundle["target"]
        spec = SplitSpec(**bundle["split"]) if bundle.get("split") else spec
    y = target_values(rows, target)
    keep = np.isfinite(y)
    if not keep.all():
        rows, y = rows.filter(pa.array(keep)), y[keep]
    held_out, how = split_rows(rows, spec)
    train_mask = ~held_out
    test = np.ones(rows.num_rows, dtype=bool) if all_rows else held_out
    if all_rows:
        how = "every row scored (--all-rows); baseline fitted on the train side of " + how
    train_rows, test_rows = rows.filter(pa.array(train_mask)), rows.filter(pa.array(test))
    y_train, y_test = y[train_mask], y[test]
    if test_rows.num_rows == 0 or train_rows.num_rows == 0:
        raise ConfigError(f"{path}: the split left {train_rows.num_rows} train and {test_rows.num_rows} test rows")
    evaluation = Evaluation(str(path), target, how, int(train_mask.sum()), int(test.sum()), tuple(bucket_edges))
    if bundle is not None:
        predictors = {n: p for n, p in bundle["predictors"].items() if not names or n in names}
        unknown = set(names) - set(predictors)
        if unknown:
            raise ConfigError(f"{fitted_file} holds no predictor {', '.join(sorted(unknown))}")
        evaluation.notes.append(f"predictors loaded from {fitted_file} (trained on {bundle.get('trained_on')})")
    else:
        classes, evaluation.notes = resolve_predictors(names)
        predictors = fit_predictors(classes, train_rows, y_train, options or {})
    baseline = group_mean_baseline(train_rows, y_train, test_rows)
    predictions = {n: predict_checked(n, p, test_rows) for n, p in predictors.items()}
    scopes = _scopes(test_rows, by)
    base_scores = {scope: score(y_test[mask], baseline[mask], bucket_edges) for scope, mask in scopes}
    for name, pred in predictions.items():
        for scope, mask in scopes:
            row: dict[str, Any] = {"predictor": name, "scope": scope, "n": int(mask.sum())}
            for metric, value in score(y_test[mask], pred[mask], bucket_edges).items():
                row[metric] = value
                row[f"{metric}_baseline"] = base_scores[scope][metric]
            evaluation.results.append(row)
    return evaluation


def fit_to_file(
    path: str | Path,
    out: str | Path,
    names: Sequence[str] = (),
    target: str = "mean",
    spec: SplitSpec = SplitSpec(),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    all_rows: bool = False,
) -> dict[str, Any]:
    """Fit predictors on the train side of ``path`` (every row with ``all_rows``) and save them."""
    from castillo_core import __version__

    rows = load_rows(path)
    y = target_values(rows, target)
    keep = np.isfinite(y)
    if not all_rows:
        keep &= ~split_rows(rows, spec)[0]
    train = rows.filter(pa.array(keep))
    classes, notes = resolve_predictors(names)
    predictors = fit_predictors(classes, train, y[keep], options or {})
    summary = {
        "dataset": str(path),
        "target": target,
        "split": {"seed": spec.seed, "test_share": spec.test_share},
        "trained_on": "all" if all_rows else "train",
        "n_train": train.num_rows,
        "castillo_version": __version__,
    }
    save_fitted(out, {**summary, "predictors": predictors})
    return {**summary, "predictors": sorted(predictors), "out": str(out), "notes": notes}
