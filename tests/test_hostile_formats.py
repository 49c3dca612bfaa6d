"""Hostile names and impossible numbers through import, sanitize, export and report.

Model and dataset names come from the data (a v1 file, a store someone sent you), so each
command that builds a path from them either refuses the name with one line naming it, or
writes it under a safely encoded name; nothing is ever written outside the output or the
destination. Impossible lengths in a v1 file are refused per record, before anything is
written. A model id with ``$`` (matplotlib's mathtext) or rich markup is drawn and printed as
text.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

from castillo_core import Store, responses_schema
from castillo_core.engine.dataset import read_table
from tests.helpers import castillo
from tests.test_v1_import import MODEL, v1_record, write_v1

# What a crafted file puts where a model or dataset name belongs. "<abs>" becomes an absolute
# path beside the test's directory, where an escape would be seen.
ESCAPES = {
    "dotdot": "x/../../../../escaped",
    "absolute": "<abs>",
    "parent": "..",
    "nul": "a\x00b",
    "long": "m" * 300,
}
TEXT_NAMES = {  # harmless as paths, hostile to matplotlib and rich
    "mathtext": "org--$x^$ model",
    "markup": "[bold]org--m | [red]x",
}


def _name(kind: str, tmp_path: Path) -> str:
    value = {**ESCAPES, **TEXT_NAMES}[kind]
    return str(tmp_path.parent / f"abs-escaped-{tmp_path.name}") if value == "<abs>" else value


def _snapshot(tmp_path: Path) -> set[str]:
    """Every path under tmp_path's parent, outside tmp_path itself."""
    found = set()
    for root, dirs, files in os.walk(tmp_path.parent):
        if Path(root) == tmp_path.parent:
            dirs[:] = [d for d in dirs if d != tmp_path.name]
        found.update(os.path.join(root, name) for name in dirs + files)
    return found


@pytest.fixture
def outside(tmp_path: Path):
    """Asserts, after the test, that nothing appeared or vanished beside tmp_path."""
    before = _snapshot(tmp_path)
    yield
    assert _snapshot(tmp_path) == before


def _records(model: str = MODEL, dataset: str = "Alpaca") -> list[dict]:
    return [
        v1_record(dataset, model, "Name three colours.", [20, 25, 22, 30]),
        v1_record(dataset, model, "Loop forever.", [15001, 15001, 40, 41]),
    ]


def _crafted(tmp_path: Path, model: str, dataset: str, detector: str | None = None) -> Path:
    """A store whose rows say ``model`` and ``dataset`` (written under a harmless partition, as a
    crafted or foreign store could be); with ``detector``, a flag-count column declaring it."""
    scratch = tmp_path / "scratch"
    write_v1(scratch / "v1", "Alpaca", "test", MODEL, _records())
    castillo("import", "castillo-v1", str(scratch / "v1"), str(scratch / "out"))
    table = read_table(scratch / "out", "prompts")
    count = table.num_rows
    table = table.set_column(table.schema.get_field_index("model"), "model", pa.array([model] * count))
    table = table.set_column(table.schema.get_field_index("dataset"), "dataset", pa.array([dataset] * count))
    if detector is not None:
        meta = {b"castillo.role": b"flag_count", b"castillo.detector": detector.encode()}
        table = table.append_column(pa.field("n_hostile", pa.int64(), metadata=meta), pa.array([0, 1]))
    config_hash = table.column("config_hash")[0].as_py()
    out = tmp_path / "out"
    store = Store(out)
    store.open()
    store.write_part(
        "crafted", "crafted", config_hash, table, responses_schema().empty_table(), {"config_hash": config_hash}
    )
    return out


# -- import ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "dataset"])
@pytest.mark.parametrize("kind", list(ESCAPES))
def test_import_refuses_a_name_that_cannot_be_a_directory(tmp_path: Path, outside: None, field: str, kind: str) -> None:
    value = _name(kind, tmp_path)
    names = {"model": MODEL, "dataset": "Alpaca", field: value}
    good = write_v1(tmp_path / "v1", "Alpaca", "test", MODEL, _records())
    records = [_records()[0], v1_record(names["dataset"], names["model"], "Hostile.", [1, 2, 3])]
    bad = tmp_path / "v1" / "preproc_Zeta_test_m.json"
    bad.write_text(json.dumps(records))
    out = tmp_path / "out"
    result = castillo("import", "castillo-v1", str(good.parent), str(out), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{bad} record 1: {field} " in result.stderr and "cannot name a directory" in result.stderr
    assert not out.exists()  # nothing half-imported, not even the good file


def test_import_keeps_dollar_and_bracket_names_inside_the_output(tmp_path: Path, outside: None) -> None:
    source = tmp_path / "v1"
    write_v1(source, "Alpaca", "test", "m", _records(TEXT_NAMES["mathtext"], "Alpaca $x^$"))
    out = tmp_path / "out"
    castillo("import", "castillo-v1", str(source), str(out))
    assert set(read_table(out, "prompts").column("model").to_pylist()) == {TEXT_NAMES["mathtext"]}
    assert all(out in p.parents for p in (out / "prompts").rglob("part-*.parquet"))


# -- impossible numbers (item 10) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output_sizes": [10, float("nan"), 12]}, "output_sizes[1] is nan"),
        ({"output_sizes": [10, -5, 12]}, "output_sizes[1] is -5"),
        ({"output_sizes": [10, 11.5, 12]}, "output_sizes[1] is 11.5"),
        ({"output_sizes": [10, "11", 12]}, "output_sizes[1] is '11'"),
        ({"output_sizes": [True, 11]}, "output_sizes[0] is True"),
        ({"output_sizes": [10, None]}, "output_sizes[1] is None"),
        ({"output_sizes": []}, "output_sizes must be a non-empty list"),
        ({"output_mean": float("nan")}, "output_mean must be a finite number >= 0, got nan"),
        ({"output_std": -1.0}, "output_std must be a finite number >= 0, got -1.0"),
        ({"output_percentiles": {"p25": 1, "p50": 2, "p75": float("inf"), "p99": 4}}, "output_percentiles.p75"),
        ({"input_size": -3}, "input_size must be a token count >= 0"),
        ({"temp": float("nan")}, "temp must be a finite number >= 0"),
    ],
)
def test_impossible_numbers_are_refused_per_record(tmp_path: Path, change: dict, message: str) -> None:
    source = tmp_path / "v1"
    write_v1(source, "Alpaca", "test", MODEL, _records())  # a good file, read first
    bad = {**v1_record("Mbpp", MODEL, "Broken.", [10, 11, 12]), **change}
    path = source / f"preproc_Mbpp_test_{MODEL}.json"
    path.write_text(
        json.dumps([v1_record("Mbpp", MODEL, "Fine.", [1, 2]), bad])
    )  # NaN/Infinity as v1's json wrote them
    out = tmp_path / "out"
    result = castillo("import", "castillo-v1", str(source), str(out), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path} record 1: " in result.stderr and message in result.stderr
    assert not out.exists()  # refused before anything was written


# -- sanitize -----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "dataset"])
@pytest.mark.parametrize("kind", list(ESCAPES))
def test_sanitize_refuses_a_stored_name_that_cannot_be_a_directory(
    tmp_path: Path, outside: None, field: str, kind: str
) -> None:
    value = _name(kind, tmp_path)
    names = {"model": MODEL, "dataset": "Alpaca", field: value}
    out = _crafted(tmp_path, names["model"], names["dataset"])
    result = castillo("sanitize", str(out), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{field} {repr(value)[:20]}" in result.stderr and "cannot name a directory" in result.stderr
    assert not (out / "views").exists()  # refused before any view was written


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "parent", "nul", "long"])
def test_sanitize_refuses_a_detector_that_is_a_path(tmp_path: Path, outside: None, kind: str) -> None:
    out = _crafted(tmp_path, MODEL, "Alpaca")
    result = castillo("sanitize", str(out), "--detector", _name(kind, tmp_path), check=False)
    assert result.returncode == 2 and "--detector" in result.stderr and "not a detector name" in result.stderr
    assert not (out / "views").exists()


def test_sanitize_prints_markup_and_dollars_as_text(tmp_path: Path, outside: None) -> None:
    out = _crafted(tmp_path, TEXT_NAMES["markup"], TEXT_NAMES["mathtext"])
    result = castillo("sanitize", str(out))
    assert "[bold]org--m | [red]x" in result.stdout  # markup shown, not applied
    assert (
        read_table(out / "views" / "v1-length" / "original", "prompts").column("model")[0].as_py()
        == (TEXT_NAMES["markup"])
    )


# -- export -------------------------------------------------------------------------------

_V1_NAME = re.compile(r"^preproc_[^_/]+_[^_/]+_[^/]+\.json$")


@pytest.mark.parametrize("field", ["model", "dataset"])
@pytest.mark.parametrize("kind", [*ESCAPES, *TEXT_NAMES])
def test_v1_export_encodes_names_into_safe_file_names(tmp_path: Path, outside: None, field: str, kind: str) -> None:
    value = _name(kind, tmp_path)
    names = {"model": MODEL, "dataset": "Alpaca", field: value}
    out, dest = _crafted(tmp_path, names["model"], names["dataset"]), tmp_path / "dest"
    castillo("export", str(out), "--format", "castillo-v1", str(dest))
    written = [p for p in dest.rglob("*") if p.name != ".castillo-export"]
    assert len(written) == 1 and written[0].parent == dest
    name = written[0].name
    assert _V1_NAME.match(name) and len(name.encode()) <= 241 and "\x00" not in name
    assert {r[field] for r in json.loads(written[0].read_text())} == {value}  # the records keep the real name
    record = json.loads((dest / ".castillo-export").read_text())
    assert list(record["files"]) == [name]


def test_v1_export_keeps_two_names_that_read_the_same_in_a_file_name(tmp_path: Path) -> None:
    source, out, dest = tmp_path / "v1", tmp_path / "out", tmp_path / "dest"
    write_v1(source, "a_b", "test", MODEL, [v1_record("a_b", MODEL, "one", [1, 2])])
    write_v1(source, "a-b", "test", MODEL, [v1_record("a-b", MODEL, "two", [1, 2])])
    castillo("import", "castillo-v1", str(source), str(out))
    result = castillo("export", str(out), "--format", "castillo-v1", str(dest))
    assert "wrote 2 row(s) in 2 v1 file(s)" in result.stdout
    datasets = {r["dataset"] for p in dest.glob("preproc_*.json") for r in json.loads(p.read_text())}
    assert datasets == {"a_b", "a-b"}


@pytest.mark.parametrize("kind", [*ESCAPES, *TEXT_NAMES])
def test_hf_export_writes_only_inside_the_destination(tmp_path: Path, outside: None, kind: str) -> None:
    value = _name(kind, tmp_path)
    out, dest = _crafted(tmp_path, value, value), tmp_path / "dest"
    castillo("export", str(out), "--format", "hf", str(dest))
    record = json.loads((dest / ".castillo-export").read_text())
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == {*record["files"], ".castillo-export"}
    shards = files - {"README.md", ".castillo-export"}
    layout = r"(original|(sanitized|degenerate)-v1-length)/\w+-\d+-of-\d+\.parquet"  # fixed names only
    assert shards and all(re.fullmatch(layout, f) for f in shards)


# -- report -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*ESCAPES, *TEXT_NAMES])
def test_report_draws_hostile_names_as_text(tmp_path: Path, outside: None, kind: str) -> None:
    pytest.importorskip("matplotlib")
    value = _name(kind, tmp_path)
    out = _crafted(tmp_path, value, value, detector=value)
    result = castillo("report", str(out), "--quiet", check=False)
    assert result.returncode == 0, result.stderr
    report = out / "report"
    summary = json.loads((report / "summary.json").read_text())
    assert {c["model"] for c in summary["cells"]} == {value}
    pngs = {p.name for p in report.iterdir() if p.suffix == ".png"}
    # one cell: a table, a histogram, its prompts
    assert {f["file"] for f in summary["figures"]} == pngs and len(pngs) == 3
    assert all(len(name.encode()) < 120 and re.fullmatch(r"[\w.+=@,~-]+", name) for name in pngs)
    page = (report / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(pngs)


def test_export_force_deletes_nothing_outside_dest_whatever_its_record_says(tmp_path: Path, outside: None) -> None:
    out, dest = _crafted(tmp_path, MODEL, "Alpaca"), tmp_path / "dest"
    castillo("export", str(out), "--format", "castillo-v1", str(dest))
    victim, elsewhere = tmp_path / "victim.txt", tmp_path / "elsewhere"
    victim.write_text("keep")
    elsewhere.mkdir()
    (elsewhere / "data.json").write_text("keep")
    (dest / "linked").symlink_to(elsewhere)
    record = json.loads((dest / ".castillo-export").read_text())
    record["files"].update({"../victim.txt": None, str(victim): None, "linked/data.json": None, "linked": None})
    record["directories"] = ["../elsewhere", "linked", str(elsewhere)]
    (dest / ".castillo-export").write_text(json.dumps(record))
    castillo("export", str(out), "--format", "castillo-v1", str(dest), "--force")
    assert victim.read_text() == "keep" and (elsewhere / "data.json").read_text() == "keep"
    assert (dest / "linked").is_symlink()
