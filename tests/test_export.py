"""`castillo export OUT --format hf|castillo-v1 DEST`.

The hf export is loaded back with `datasets.load_dataset(DEST, config)` offline, as a
user of the hub would, and the card's own code runs as written (tests/test_hub.py pushes
an export to a stand-in of the Hub and loads it from there); the v1 export is read back
with castillo's own v1 importer (a round trip) and, on v1's published test split,
compared with v1's files themselves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from castillo_core.engine.dataset import read_table
from castillo_core.engine.schema import V1_COLUMNS
from tests.helpers import castillo
from tests.test_v1_import import MODEL, v1_record, write_v1

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _v1_splits(directory: Path) -> Path:
    """v1 files of three splits and two datasets; "Alpaca train d" has every sample at the cap."""
    sizes = [[20, 25, 22, 30], [15001, 800, 900, 850], [60, 70, 65, 80], [15001] * 4, [40, 41, 42, 43]]
    for split, texts in (("train", ["a", "b", "c", "d"]), ("validate", ["e"]), ("test", ["f", "g"])):
        records = [v1_record("Alpaca", MODEL, f"Alpaca {split} {t}", sizes[i % 5]) for i, t in enumerate(texts)]
        write_v1(directory, "Alpaca", split, MODEL, records)
    write_v1(directory, "Mbpp", "test", MODEL, [v1_record("Mbpp", MODEL, "Reverse a string.", [60, 61, 62, 63])])
    return directory


def card_code(card: str, repo: str) -> str:
    """The card's Python code blocks, joined, with the repository id the card names replaced by ``repo``."""
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert blocks, card
    return "\n".join(blocks).replace('"ORG/NAME"', json.dumps(repo))


def run_card_code(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a card's code as a user would, in a fresh interpreter with its own datasets cache."""
    full = {**os.environ, "HF_HOME": str(tmp_path / "card-hf-home"), **(env or {})}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)
    assert result.returncode == 0, f"the card's code failed:\n{code}\n{result.stderr[-3000:]}"
    return result


def _header(card: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(card.split("---\n")[1])


def test_hf_export_loads_back_offline_with_configs_and_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="pip install datasets (loads the export back)")
    out, dest = tmp_path / "out", tmp_path / "hf"
    castillo("import", "castillo-v1", str(_v1_splits(tmp_path / "v1")), str(out))
    result = castillo("export", str(out), "--format", "hf", str(dest))
    assert "original: train 4, validate 1, test 3" in result.stdout
    assert "sanitized-v1-length: train 3, validate 1, test 3" in result.stdout
    assert "degenerate-v1-length: train 2, test 1" in result.stdout
    assert "warning" not in result.stderr  # v1's own cap: v1's rule means what it says

    cache = str(tmp_path / "cache")
    original = datasets.load_dataset(str(dest), cache_dir=cache)  # the default config: the data unchanged
    assert {name: ds.num_rows for name, ds in original.items()} == {"train": 4, "validate": 1, "test": 3}
    stored = {r["sample_id"]: r for r in read_table(out, "prompts").to_pylist()}
    rows = [row for split in original.values() for row in split]
    assert sorted(r["sample_id"] for r in rows) == sorted(stored)  # every row once: no split duplicated
    for row in rows:
        assert {c: row[c] for c in V1_COLUMNS} == {c: stored[row["sample_id"]][c] for c in V1_COLUMNS}
    sanitized = datasets.load_dataset(str(dest), "sanitized-v1-length", cache_dir=cache)
    story = next(r for r in sanitized["train"] if r["prompt_text"] == "Alpaca train b")
    assert story["output_sizes"] == [800, 900, 850] and story["longest_response"] == "TEXT DEGENERATION"
    degenerate = datasets.load_dataset(str(dest), "degenerate-v1-length", cache_dir=cache)
    assert {name: ds.num_rows for name, ds in degenerate.items()} == {"train": 2, "test": 1}
    names = ["original", "sanitized-v1-length", "degenerate-v1-length"]  # no responses: v1 published none
    assert datasets.get_dataset_config_names(str(dest)) == names

    card = (dest / "README.md").read_text()
    header = _header(card)
    assert header["configs"][0] == {
        "config_name": "original",
        "default": True,
        "data_files": [{"split": s, "path": f"original/{s}-*.parquet"} for s in ("train", "validate", "test")],
    }
    assert not any(f["split"] == "full" for c in header["configs"] for f in c["data_files"])
    assert header["license"] == ["cc-by-4.0", "cc-by-nc-4.0"]  # the export's, Alpaca's; Mbpp's is cc-by-4.0 too
    assert header["language"] == ["en", "code"]
    assert header["source_datasets"] == ["yahma/alpaca-cleaned", "google-research-datasets/mbpp"]
    assert "| Alpaca | yahma/alpaca-cleaned | CC BY-NC 4.0 | cc-by-nc-4.0 |" in card
    assert "| `output_sizes` | `list<element: int64>` |" in card  # the schema
    assert "castillo-v1" in card and "max_new_tokens=15000" in card  # provenance
    printed = run_card_code(card_code(card, str(dest)), tmp_path).stdout
    assert printed.split()[0] in {r["prompt_id"] for r in stored.values()}  # the card prints a row of this dataset

    refused = castillo("export", str(out), "--format", "hf", str(dest), check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    castillo("export", str(out), "--format", "hf", str(dest), "--force")


def test_hf_export_of_a_run_carries_responses_metric_columns_and_warns_about_a_small_cap(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="pip install datasets (loads the export back)")
    out, dest = tmp_path / "out", tmp_path / "hf"
    castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "--out", str(out), "--quiet", "-n", "4",
        "--max-new-tokens", "200",
    )  # fmt: skip
    result = castillo(
        "export", str(out), "--format", "hf", str(dest), "--license", "cc0-1.0", "--title", "Tiny lengths",
        "--detector", "v1-length", "--detector", "repetition",
    )  # fmt: skip
    assert "warning: The v1-length rule" in result.stderr and "cap is 200 token(s)" in result.stderr
    assert "responses: test 48" in result.stdout and "degenerate-repetition: test 12" in result.stdout
    loaded = datasets.load_dataset(str(dest), cache_dir=str(tmp_path / "cache"))  # the default config: original
    assert set(loaded) == {"test"} and loaded["test"].num_rows == 12
    responses = datasets.load_dataset(str(dest), "responses", split="test", cache_dir=str(tmp_path / "cache"))
    assert responses.num_rows == 48 and {"text", "output_tokens", "finish_reason"} <= set(responses.column_names)
    card = (dest / "README.md").read_text()
    header = _header(card)
    assert header["license"] == ["cc0-1.0"] and "# Tiny lengths" in card and "| Tiny | - | CC0 | cc0-1.0 |" in card
    configs = ["original", "sanitized-v1-length", "sanitized-repetition", "degenerate-repetition", "responses"]
    assert [c["config_name"] for c in header["configs"]] == configs  # degenerate-v1-length flags nothing: undeclared
    assert "> **Note.** The v1-length rule" in card and "fake-rev" in card and "| fake--model | Tiny | 12 |" in card
    assert "| `output_tokens` |" in card  # the responses config's schema
    run_card_code(card_code(card, str(dest)), tmp_path)
    plain = castillo("export", str(out), "--format", "hf", str(tmp_path / "plain"), "--no-views")
    assert plain.stdout.splitlines()[:2] == ["original: test 12", "responses: test 48"] and not plain.stderr


def _normalized(rows: list[dict[str, Any]], v1_counts: bool = False) -> dict[str, dict[str, Any]]:
    """v1 columns of each row with v1's rounding (2 decimals for mean/std, 3 for percentiles, 5 for gen_time).

    ``v1_counts``: a sample the cap cut counts ``max_new_tokens + 1``, as v1 counted it (and
    as the v1 export writes it), with the statistics over those values.
    """
    import numpy as np

    out = {}
    for row in rows:
        record = {c: row[c] for c in V1_COLUMNS}
        if v1_counts and "length" in row["finish_reasons"]:
            sizes = [
                s + 1 if r == "length" else s for s, r in zip(row["output_sizes"], row["finish_reasons"], strict=True)
            ]
            record["output_sizes"] = sizes
            record["output_mean"], record["output_std"] = float(np.mean(sizes)), float(np.std(sizes))
            record["output_percentiles"] = {f"p{q}": float(np.percentile(sizes, q)) for q in (25, 50, 75, 99)}
        record["gen_time"] = round(record["gen_time"], 5)
        record["output_mean"] = round(record["output_mean"], 2)
        record["output_std"] = round(record["output_std"], 2)
        record["output_percentiles"] = {k: round(v, 3) for k, v in record["output_percentiles"].items()}
        out[row["sample_id"]] = record
    return out


def test_v1_round_trip_run_export_import_gives_the_same_rows(tmp_path: Path) -> None:
    out, dest, back = tmp_path / "out", tmp_path / "v1", tmp_path / "back"
    castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "-C", "size=15", "--out", str(out), "--quiet", "-n", "5",
        "--max-new-tokens", "90",
    )  # fmt: skip
    castillo("run", "--backend", "fake", "--model", "org/other", "--corpus", "tiny", "--out", str(out), "--quiet")
    result = castillo("export", str(out), "--format", "castillo-v1", str(dest))
    assert "wrote 27 row(s) in 2 v1 file(s)" in result.stdout
    names = sorted(p.name for p in dest.glob("*.json"))
    assert names == ["preproc_Tiny_test_fake--model.json", "preproc_Tiny_test_org--other.json"]
    record = json.loads((dest / names[0]).read_text())[0]
    assert list(record) == list(V1_COLUMNS)  # v1's columns, in v1's order, nothing else
    assert record["output_mean"] == round(record["output_mean"], 2)

    castillo("import", "castillo-v1", str(dest), str(back), "--cap", "90")
    original, imported = read_table(out, "prompts").to_pylist(), read_table(back, "prompts").to_pylist()
    assert _normalized(imported) == _normalized(original, v1_counts=True)
    capped = [r for r in original if r["max_new_tokens"] == 90 and "length" in r["finish_reasons"]]
    assert capped  # the cap cut some samples: exported as v1 counted them, 91
    exported = {r["sample_id"]: r for p in dest.glob("*.json") for r in json.loads(p.read_text())}
    assert all(91 in exported[r["sample_id"]]["output_sizes"] for r in capped)
    assert all(90 not in r["output_sizes"] for r in exported.values() if r["model"] == "fake--model")
    assert all(r["gen_time"] == round(r["gen_time"], 5) for r in exported.values())
    by_id = {r["sample_id"]: r for r in original}
    for row in imported:
        mine = by_id[row["sample_id"]]
        assert (row["split"], row["n_samples"], row["output_min"], row["output_max"]) == (
            mine["split"],
            mine["n_samples"],
            mine["output_min"],
            mine["output_max"] + (1 if mine["output_max"] == 90 and "length" in mine["finish_reasons"] else 0),
        )
        assert row["n_length_capped"] >= mine["n_length_capped"]  # v1's rule: 89 or more (cap - 1) was capped


def test_v1_export_of_the_sanitized_view_and_a_busy_destination(tmp_path: Path) -> None:
    out, dest = tmp_path / "out", tmp_path / "v1"
    castillo("import", "castillo-v1", str(_v1_splits(tmp_path / "src")), str(out))
    castillo("export", str(out), "--format", "castillo-v1", str(dest), "--view", "sanitized")
    rows = [r for p in dest.glob("*.json") for r in json.loads(p.read_text())]
    assert len(rows) == 7 and {r["longest_response"] for r in rows if r["prompt_text"] == "Alpaca train b"} == {
        "TEXT DEGENERATION"
    }
    (dest / "notes.txt").write_text("mine")
    refused = castillo("export", str(out), "--format", "castillo-v1", str(dest), check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr and "--force" in refused.stderr
    castillo("export", str(out), "--format", "castillo-v1", str(dest), "--force")
    assert (dest / "notes.txt").read_text() == "mine"  # --force replaces only the export's own files
    assert sum(len(json.loads(p.read_text())) for p in dest.glob("*.json")) == 8


RECORD = ".castillo-export"


def _files(dest: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["hf", "castillo-v1"])
def test_export_force_replaces_only_the_files_it_wrote(tmp_path: Path, fmt: str) -> None:
    out, dest = tmp_path / "out", tmp_path / "dest"
    castillo("import", "castillo-v1", str(_v1_splits(tmp_path / "v1")), str(out))
    castillo("export", str(out), "--format", fmt, str(dest))
    first = json.loads((dest / RECORD).read_text())
    assert first["complete"] and first["castillo_export"] == fmt and all(first["files"].values())
    user = {"notes.txt": "my notes", "drafts/todo.md": "- push it"}
    user["README.md" if fmt == "castillo-v1" else "original/NOTES.md"] = "mine, not the export's"
    for name, text in user.items():
        (dest / name).parent.mkdir(exist_ok=True)
        (dest / name).write_text(text)
    castillo("export", str(out), "--format", fmt, str(dest), "--force")
    assert {name: (dest / name).read_text() for name in user} == user  # the user's files survive --force
    again = json.loads((dest / RECORD).read_text())
    assert set(again["files"]) == set(first["files"])
    assert set(_files(dest)) == {*again["files"], *user, RECORD}


def test_export_force_over_another_format_removes_the_earlier_files_only(tmp_path: Path) -> None:
    out, dest = tmp_path / "out", tmp_path / "dest"
    castillo("import", "castillo-v1", str(_v1_splits(tmp_path / "v1")), str(out))
    castillo("export", str(out), "--format", "castillo-v1", str(dest))
    (dest / "notes.txt").write_text("keep me")
    castillo("export", str(out), "--format", "hf", str(dest), "--force")
    assert not list(dest.glob("preproc_*.json"))  # the v1 export's files, listed in its record, are gone
    record = json.loads((dest / RECORD).read_text())
    assert set(_files(dest)) == {*record["files"], "notes.txt", RECORD} and "README.md" in record["files"]


@pytest.mark.parametrize("fmt", ["hf", "castillo-v1"])
def test_export_force_refuses_a_directory_it_did_not_write(tmp_path: Path, fmt: str) -> None:
    out, dest = tmp_path / "out", tmp_path / "repo"
    castillo("import", "castillo-v1", str(_v1_splits(tmp_path / "v1")), str(out))
    dest.mkdir()
    (dest / "README.md").write_text("# my project\n")
    (dest / "notes.txt").write_text("notes")
    before = _files(dest)
    result = castillo("export", str(out), "--format", fmt, str(dest), "--force", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds no castillo export" in result.stderr and RECORD in result.stderr
    assert _files(dest) == before  # nothing deleted, nothing added


def test_export_force_keeps_a_card_edited_since_the_export(tmp_path: Path) -> None:
    out, dest = tmp_path / "out", tmp_path / "dest"
    castillo("import", "castillo-v1", str(_v1_splits(tmp_path / "v1")), str(out))
    castillo("export", str(out), "--format", "hf", str(dest))
    (dest / "README.md").write_text((dest / "README.md").read_text() + "\nMy own notes on this dataset.\n")
    before = _files(dest)
    result = castillo("export", str(out), "--format", "hf", str(dest), "--force", check=False)
    assert result.returncode == 2 and f"{dest / 'README.md'} changed since castillo export wrote it" in result.stderr
    assert _files(dest) == before


@pytest.mark.shared
@pytest.mark.slow  # seconds: the whole published v1 test split
def test_v1_export_of_imported_v1_gives_back_v1s_files(shared_v1: Path, tmp_path: Path) -> None:
    source = shared_v1 / "results" / "test"
    out, dest = tmp_path / "out", tmp_path / "v1"
    castillo("import", "castillo-v1", str(source), str(out))
    castillo("export", str(out), "--format", "castillo-v1", str(dest))
    originals = sorted(p.name for p in source.glob("preproc_*.json"))
    assert sorted(p.name for p in dest.glob("*.json")) == originals and len(originals) == 91
    for name in originals:
        assert json.loads((dest / name).read_text()) == json.loads((source / name).read_text()), name
