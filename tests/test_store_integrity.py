"""A store that can be trusted: one writer at a time, damage found and repaired, hostile names and input refused.

Each test asserts what the user sees and that nothing stored is lost, duplicated or written
outside the output.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from castillo_core import read_manifest, read_table
from tests.helpers import castillo, make_distribution

RUN = ("run", "--backend", "fake", "--corpus", "tiny", "-n", "3", "--quiet", "--metric", "length")


def _cli_process(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "castillo_core.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        **kwargs,
    )


def _rows(out: Path) -> dict[str, tuple[Any, ...]]:
    table = read_table(out, "prompts", columns=["prompt_id", "output_sizes", "longest_response"])
    ids = table.column("prompt_id").to_pylist()
    assert len(ids) == len(set(ids)), "a prompt is stored twice"
    return {
        pid: (sizes, text)
        for pid, sizes, text in zip(
            ids, table.column("output_sizes").to_pylist(), table.column("longest_response").to_pylist(), strict=True
        )
    }


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# 1. one writer per output ---------------------------------------------------------------------------


def test_a_second_writer_is_refused_at_once_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    slow = _cli_process(*RUN, "--out", str(out), "-B", "delay=0.4", "-B", "batch=1")
    try:
        deadline = time.monotonic() + 30
        while not (out / "manifest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = castillo(*RUN, "--out", str(out), check=False)
        assert second.returncode == 2
        assert "another castillo process is writing into" in second.stderr and f"pid {slow.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        slow.wait(timeout=120)
    assert slow.returncode == 0
    assert len(_rows(out)) == 12 and castillo("verify", str(out)).returncode == 0


@pytest.mark.slow
def test_concurrent_writers_under_random_sigkills_end_equal_to_an_uninterrupted_run(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    args = (*RUN, "-C", "size=40", "--flush-every", "6", "-B", "delay=0.02", "-B", "batch=2")
    castillo(*args, "--out", str(reference))
    out = tmp_path / "out"
    rng = random.Random(7)
    for _ in range(12):
        procs = [_cli_process(*args, "--out", str(out)) for _ in range(3)]
        time.sleep(rng.uniform(0.3, 1.5))
        for proc in procs:
            if proc.poll() is None and rng.random() < 0.7:
                proc.send_signal(signal.SIGKILL)
        codes = [proc.wait(timeout=120) for proc in procs]
        assert all(code in (0, 2, -signal.SIGKILL) for code in codes), codes
        if 0 in codes:
            break
    castillo(*args, "--out", str(out))  # whatever is left
    assert castillo("verify", str(out)).returncode == 0
    assert _rows(out) == _rows(reference)


# 2. damage is found, named, and repaired exactly ----------------------------------------------------


@pytest.mark.parametrize("damage", ["delete", "truncate", "copy"])
def test_damaged_parts_are_refused_and_repair_regenerates_exactly_them(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "--flush-every", "9", "--out", str(out))
    reference = _rows(out)
    responses = sorted((out / "responses").rglob("part-*.parquet"))
    victim = responses[1]
    if damage == "delete":
        victim.unlink()
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:200])
    else:  # a whole part copied under another name: its prompts would be counted twice
        prompts = out / "prompts" / victim.relative_to(out / "responses")
        (victim.parent / "part-copied.parquet").write_bytes(victim.read_bytes())
        (prompts.parent / "part-copied.parquet").write_bytes(prompts.read_bytes())
    for command in ((*RUN, "--out", str(out)), ("show", str(out))):
        refused = castillo(*command, check=False)
        assert refused.returncode == 2 and "castillo verify" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    checked = castillo("verify", str(out), "--json", check=False)
    assert checked.returncode == 1
    problems = json.loads(checked.stdout)["problems"]
    assert len(problems) == 1
    castillo("verify", str(out), "--repair")
    assert castillo("verify", str(out)).returncode == 0
    rerun = castillo(*RUN, "--out", str(out))
    regenerated = 0 if damage == "copy" else 3  # one part of 3 prompts is quarantined, then generated again
    assert f"\tnew={regenerated}\t" in rerun.stdout
    assert _rows(out) == reference
    assert (out / "_quarantine").exists()


def test_a_commit_cut_between_the_ledger_and_the_prompts_rename_reads_and_resumes(tmp_path: Path) -> None:
    """A kill right after the ledger line (prompts file still under its temporary name).

    Found by the crash tests in CI: readers refused the output as damaged. Readers skip the
    part (its responses wait for their prompts), and the next writer completes the rename.
    """
    out = tmp_path / "out"
    castillo(*RUN, "--flush-every", "9", "--out", str(out))
    reference = _rows(out)
    part = sorted((out / "prompts").rglob("part-*.parquet"))[1]
    part.rename(part.with_name(".tmp-" + part.name))  # the state the kill leaves
    partial = read_table(out, "prompts")
    assert 0 < partial.num_rows < len(reference)
    assert set(read_table(out, "responses").column("prompt_id").to_pylist()) == set(
        partial.column("prompt_id").to_pylist()
    )
    assert castillo("show", str(out)).returncode == 0
    rerun = castillo(*RUN, "--out", str(out))
    assert "completed 1 part(s) whose commit a crash interrupted" in rerun.stderr
    assert "\tnew=0\t" in rerun.stdout
    assert _rows(out) == reference
    assert castillo("verify", str(out)).returncode == 0


# 3. a corpus file edited in place is a different selection -------------------------------------------


def test_an_edited_corpus_file_is_refused_with_the_difference(tmp_path: Path) -> None:
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4)))
    out = tmp_path / "out"
    args = (
        "run",
        "--backend",
        "fake",
        "--corpus",
        "jsonl",
        "--source",
        str(source),
        "-n",
        "2",
        "--quiet",
        "--out",
        str(out),
    )
    castillo(*args)
    source.write_text("".join(json.dumps({"prompt": f"Another question {i}?"}) + "\n" for i in range(4)))
    refused = castillo(*args, check=False)
    assert refused.returncode == 2 and "corpus.content: 'sha256:" in refused.stderr
    assert read_table(out, "prompts").num_rows == 4


# 4. SIGTERM, full disks ------------------------------------------------------------------------------------


def test_sigterm_flushes_finished_prompts_and_marks_the_run_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli_process(*RUN, "-B", "delay=0.15", "-B", "batch=1", "--flush-every", "300", "--out", str(out))
    deadline = time.monotonic() + 30
    while not (out / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "SIGTERM received" in stderr and "Traceback" not in stderr
    manifest = read_manifest(out)
    (cell,) = manifest.cells.values()
    assert manifest.runs[-1].status == "interrupted" and cell.status == "interrupted"
    stored = read_table(out, "prompts").num_rows
    assert stored >= 1 and cell.prompts_done == stored, "prompts finished before SIGTERM are flushed"
    rerun = castillo(*RUN, "--out", str(out))
    assert f"\tnew={12 - stored}\t" in rerun.stdout


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    castillo(*RUN, "--limit", "3", "--out", str(out))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    proc = castillo(*RUN, "--out", str(out), check=False)
    assert proc.returncode == 2 and "No space left on device" in proc.stderr and "Traceback" not in proc.stderr
    assert not [p for p in out.rglob(".tmp-*")], "a failed write leaves no temporary file"
    monkeypatch.undo()
    assert castillo("verify", str(out)).returncode == 0
    castillo(*RUN, "--out", str(out))
    assert len(_rows(out)) == 12


# 6. names from data never leave the output ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["../../../../escaped", "/abs/path", "..", "a/../../b", "$x$", "ünï cödé"])
def test_model_names_are_encoded_inside_the_output(tmp_path: Path, model: str) -> None:
    out = tmp_path / "deep" / "out"
    before = _files(tmp_path)
    castillo(*RUN, "--limit", "2", "--model", model, "--out", str(out))
    after = _files(tmp_path)
    assert all(p.startswith("deep") for p in after - before), sorted(after - before)
    assert read_table(out, "prompts").column("model").to_pylist() == [model.replace("/", "--")] * 2
    assert castillo("verify", str(out)).returncode == 0


@pytest.mark.parametrize(("model", "message"), [("bad\x00name", "control characters"), ("m" * 300, "too long")])
def test_unusable_model_names_are_refused_before_anything_runs(tmp_path: Path, model: str, message: str) -> None:
    out = tmp_path / "out"
    proc = castillo(*RUN, "--model", model, "--out", str(out), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.rglob("part-*"))


# 9, 10, 13. hostile input ----------------------------------------------------------------------------------


def test_a_plugin_calling_sys_exit_at_import_is_a_failed_plugin(tmp_path: Path) -> None:
    root = make_distribution(
        tmp_path / "site", "castillo-quitter", "quitter", "castillo_quitter", "import sys\nsys.exit(0)\n"
    )
    env = {"PYTHONPATH": str(root)}
    records = {p["name"]: p for p in json.loads(castillo("plugins", "--json", env=env).stdout)}
    assert records["quitter"]["status"] == "failed" and "SystemExit" in records["quitter"]["error"]
    run = castillo(*RUN, "--limit", "2", "--out", str(tmp_path / "o"), env=env)
    assert "Tiny\tdone" in run.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--flush-every", "0"), "--flush-every"),
        (("--flush-every", "-1"), "--flush-every"),
        (("--temperature", "inf"), "temperature"),
        (("--top-p", "nan"), "top_p"),
    ],
)
def test_nonsense_settings_are_refused(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    proc = castillo(*RUN, *flags, "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_an_empty_corpus_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "empty.jsonl"
    source.write_text("")
    out = tmp_path / "o"
    proc = castillo(
        "run", "--backend", "fake", "--corpus", "jsonl", "--source", str(source), "--out", str(out), check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(source) in proc.stderr
    assert not list(out.rglob("part-*"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'models = "fake"\n[[corpora]]\nname = "tiny"\n', "key models: expected [[models]] tables"),
        (b"models = [1, 2]\n", "models entry 1: expected a table"),
        (b'[[models]]\nbackend = "fake"\n[[corpora]]\nname = "tiny"\n[generation]\nn = "ten"\n', "generation.n"),
        (b"\x00\x01\x02binary\xff\xfe", "is not valid TOML"),
        (b'[[models]]\nbackend = "fake"\n[[corpora]]\nname = "tiny"\nlimit = -3\n', "corpora.0.limit"),
    ],
)
def test_hostile_grid_files_are_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_bytes(content)
    proc = castillo("run", "--config", str(grid), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert str(grid) in proc.stderr
