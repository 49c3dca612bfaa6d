"""Regenerating CASTILLO v1 as v1 ran it: the preset's pinned values, v1's token counting, v1's files.

Checked against v1's published test split (../shared/data/castillo-v1): the ``castillo-v1``
preset's dry-run shows, for all 91 cells, the sampling values v1 recorded (and with them
v1's ``sample_id`` of every row); v1's count (one more for a stop on an end id other than
the tokenizer's ``eos_token``) is what v1's data shows per family and what ``--counting v1``
gives on a tiny model with two end ids; and the v1 export of each view equals, byte for
byte, what v1's own generation and sanitize scripts wrote (a reference written here from
v1's rules, not v1's code).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from castillo_core import ModelSpec, sample_id, v1_output_tokens
from tests.helpers import castillo

PRESET_DTYPES = {"google--gemma-3-4b-it": "bf16", "google--gemma-3-12b-it": "bf16"}


def _v1_files(shared: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    for path in sorted((shared / "results" / "test").glob("preproc_*.json")):
        yield path, json.loads(path.read_text())


# -- the preset -------------------------------------------------------------------------------------


@pytest.mark.shared
def test_the_preset_dry_run_shows_v1s_recorded_values_for_all_91_cells(shared_v1: Path, tmp_path: Path) -> None:
    backends = {r["name"] for r in json.loads(castillo("list", "backends", "--json").stdout)}
    backend = "transformers" if "transformers" in backends else "fake"
    args = ["run", "--preset", "castillo-v1", "--backend", backend, "--dry-run"]
    args += ["--source", str(shared_v1 / "corpora"), "--split", "test", "--out", str(tmp_path / "planned")]
    cells = {(c["model"], c["dataset"]): c for c in json.loads(castillo(*args, "--json").stdout)["cells"]}
    assert len(cells) == 91
    checked = 0
    for path, rows in _v1_files(shared_v1):
        recorded = {(r["top_k"], r["top_p"], r["temp"]) for r in rows}
        assert len(recorded) == 1, path.name  # v1 ran each model x dataset file with one set of values
        ((top_k, top_p, temp),) = recorded
        cell = cells[(rows[0]["model"], rows[0]["dataset"])]
        assert (cell["top_k"], cell["top_p"], cell["temperature"]) == (top_k, top_p, temp), path.name
        assert cell["repetition_penalty"] == (1.05 if "Qwen" in cell["model"] else 1.0)  # applied, not recorded
        assert cell["min_p"] == 0.0 and cell["model_defaults"] is True
        assert cell["dtype"] == PRESET_DTYPES.get(cell["model"], "fp16")
        assert (cell["n"], cell["max_new_tokens"], cell["max_prompt_tokens"]) == (10, 15_000, 2_500)
        assert (cell["truncation"], cell["counting"]) == ("v1", "v1")
        if backend == "transformers":
            assert cell["truncation_supported"] and cell["counting_supported"]
        # the values enter sample_id as v1's did (50, not 50.0; 1.0, not 1)
        for row in rows:
            want = sample_id(
                row["dataset"], row["model"], cell["top_k"], cell["top_p"], cell["temperature"], row["prompt_text"]
            )
            assert want == row["sample_id"]
            checked += 1
    assert checked == 14_121
    table = castillo(*args).stdout
    assert "temperature 1.0, top_p 0.95, top_k 64, min_p 0.0, repetition_penalty 1.0; dtype bf16, n 10" in table
    assert "google--gemma-3-4b-it x DollyDataset (1 cell)" in table
    assert "repetition_penalty 1.05" in table and "truncation v1" in table and "counting v1" in table


def test_a_flag_still_overrides_the_pinned_values(tmp_path: Path) -> None:
    args = ["run", "--preset", "castillo-v1", "--backend", "fake", "--corpus", "tiny", "--dry-run", "--json"]
    cells = json.loads(castillo(*args, "--temperature", "0.3", "--out", str(tmp_path / "p")).stdout)["cells"]
    assert {c["temperature"] for c in cells} == {0.3}
    assert {(c["model"], c["top_k"]) for c in cells if "Qwen" in c["model"]} == {
        ("Qwen--Qwen2.5-7B-Instruct-1M", 20),
        ("Qwen--Qwen2.5-14B-Instruct", 20),
        ("Qwen--Qwen2.5-32B-Instruct", 20),
    }
    plain = json.loads(castillo("run", "--backend", "fake", "--corpus", "tiny", "--dry-run", "--json").stdout)
    (cell,) = plain["cells"]
    assert (cell["temperature"], cell["top_k"], cell["truncation"], cell["counting"]) == (1.0, 0, "template", "exact")
    defaults = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--dry-run", "--json", "--model-defaults",
    )  # fmt: skip
    assert json.loads(defaults.stdout)["cells"][0]["top_p"] == "model"  # read from the model when it opens


# -- counting ---------------------------------------------------------------------------------------


def test_v1s_count_from_the_exact_one() -> None:
    eos, other, cap = 2, 7, 100
    assert v1_output_tokens(5, eos, True, eos, cap) == 5  # stopped on eos_token: the end token once, as castillo
    assert v1_output_tokens(5, other, True, eos, cap) == 6  # another end id: counted, plus v1's one
    assert v1_output_tokens(cap, 42, False, eos, cap) == cap  # capped: castillo's exact cap (v1 wrote cap + 1)
    assert v1_output_tokens(cap, other, True, eos, cap) == cap  # never above the cap


@pytest.mark.shared
def test_v1s_data_shows_the_extra_token_where_the_end_id_is_not_eos(shared_v1: Path) -> None:
    lengths: dict[str, Counter[int]] = defaultdict(Counter)
    for _, rows in _v1_files(shared_v1):
        for row in rows:
            lengths[row["model"]].update(row["output_sizes"])
    for model, counts in lengths.items():
        shortest = min(counts)
        if "gemma-3" in model:
            assert shortest >= 3, model  # <end_of_turn> is not <eos>: one token + end + 1
        elif "Phi-4-mini" in model:
            assert counts[2] == 0 and counts[3] > 0, model  # <|end|> is not <|endoftext|>
        else:
            assert counts[2] > 0, model  # Llama, Qwen, Mistral: one token + the eos counted once
        assert counts[15_000] == 0 and all(s <= 15_001 for s in counts)  # v1 wrote a capped sample as 15,001


def test_counting_v1_on_a_model_with_two_end_ids(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``</s>`` is the tokenizer's eos_token, ``<eot>`` another end id: samples ending in ``<eot>`` count one more."""
    pytest.importorskip("castillo_transformers")
    from castillo_transformers import scheduler as scheduler_module
    from castillo_transformers.plugin import TransformersBackend

    from castillo_core.testing import generate_sorted, requests_for
    from tests.fixtures.tiny_hf import cached_tiny_hf

    path = cached_tiny_hf(Path(request.config.cache.mkdir("castillo-tiny-hf")), stop_logit=6.0, multi_stop=True)
    captured: dict[tuple[int, int], list[int]] = {}
    run = scheduler_module.Scheduler.run

    def spy(self: Any, prompts: Any) -> Iterator[Any]:
        for job, samples, gen_time in run(self, prompts):
            for s in samples:
                captured[(job.key, s.index)] = list(s.tokens)
            yield job, samples, gen_time

    monkeypatch.setattr(scheduler_module.Scheduler, "run", spy)
    backend = TransformersBackend(ModelSpec(backend="transformers", model=str(path), options={"threads": 1}))
    backend.open()
    try:
        assert backend.counting_modes == ("exact", "v1")
        eos, eot = backend.tokenizer.eos_token_id, backend.tokenizer.convert_tokens_to_ids("<eot>")
        requests = requests_for(backend, [f"Question {i}: why is the sky blue?" for i in range(6)], n=6)
        exact = generate_sorted(backend, requests, max_new_tokens=24, counting="exact")
        ids = dict(captured)
        v1 = generate_sorted(backend, requests, max_new_tokens=24, counting="v1")
    finally:
        backend.close()
    ends: Counter[str] = Counter()
    for a, b in zip(exact, v1, strict=True):
        for ca, cb in zip(a.completions, b.completions, strict=True):
            assert (ca.text, ca.finish_reason) == (cb.text, cb.finish_reason)  # the same samples, counted twice
            last = ids[(a.key, ca.sample_index)][-1]
            assert ca.output_tokens == len(ids[(a.key, ca.sample_index)])
            if ca.finish_reason == "stop" and last == eot and ca.output_tokens < 24:
                assert cb.output_tokens == ca.output_tokens + 1
                ends["eot"] += 1
            else:
                assert cb.output_tokens == ca.output_tokens
                ends["eos" if last == eos else "other"] += 1
    assert ends["eot"] and ends["eos"]  # both end ids were drawn


# -- v1's files -------------------------------------------------------------------------------------


def _v1_views(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """v1's three views of a file's records, by v1's rules (sanitize_dataset, cap 15,000)."""
    degenerate, sanitized = [], []
    for row in rows:
        sizes = row["output_sizes"]
        at_cap = max(sizes) >= 14_999
        high_variance = row["output_std"] > 2 * row["output_mean"] and max(sizes) > 8_499
        if not at_cap and not high_variance:
            sanitized.append(row)
            continue
        degenerate.append(row)
        kept = [s for s in sizes if s <= 8_499] if high_variance else [s for s in sizes if s < 14_999]
        if not kept:
            continue
        percentiles = np.percentile(kept, [25, 50, 75, 99])
        sanitized.append(
            {
                **row,
                "output_sizes": kept,
                "output_mean": float(np.mean(kept)),
                "output_std": float(np.std(kept)),
                "output_percentiles": {f"p{q}": float(v) for q, v in zip((25, 50, 75, 99), percentiles, strict=True)},
                "longest_response": "TEXT DEGENERATION",
            }
        )
    return {"original": rows, "degenerate": degenerate, "sanitized": sanitized}


@pytest.mark.shared
@pytest.mark.slow  # seconds: the whole test split, three exports
def test_the_v1_export_of_each_view_is_what_v1s_scripts_wrote(shared_v1: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo("import", "castillo-v1", str(shared_v1 / "results" / "test"), str(out))
    rows = {"original": 0, "degenerate": 0, "sanitized": 0}
    recomputed = 0
    for view in rows:
        castillo("export", str(out), "--format", "castillo-v1", str(tmp_path / view), "--view", view)
    for path, records in _v1_files(shared_v1):
        for view, want in _v1_views(records).items():
            written = tmp_path / view / path.name
            assert (written.read_bytes() if written.exists() else b"[]") == json.dumps(want).encode(), (view, path.name)
            rows[view] += len(want)
            if view == "sanitized":
                recomputed += sum(r["longest_response"] == "TEXT DEGENERATION" for r in want)
    assert rows == {"original": 14_121, "degenerate": 129, "sanitized": 14_120}
    assert recomputed == 128  # the rows whose statistics v1's sanitize wrote again, unrounded


def test_the_v1_export_writes_nan_as_v1s_json_dump_did() -> None:
    pytest.importorskip("castillo_formats")
    from castillo_formats.v1_export import v1_record

    from castillo_core import V1_COLUMNS

    row = {c: None for c in V1_COLUMNS} | {"output_std": float("nan"), "output_mean": 2.0, "gen_time": 1.234567891}
    row |= {"output_sizes": [2, 2], "output_percentiles": {"p25": 2.0, "p50": 2.0, "p75": 2.0, "p99": 2.0}}
    text = json.dumps([v1_record(row)])
    assert '"output_std": NaN' in text and '"gen_time": 1.23457' in text and '"top_k": null' in text
