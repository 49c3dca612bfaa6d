"""What a person reads in a terminal: tables at 80 columns, pipes, progress, help.

Most tests run the real command in this process with COLUMNS=80 (its stdout is not a
terminal, so COLUMNS is what sets the width, as on a terminal of that width); the live
display and the tables on a real terminal run inside tmux at 80 and 160 columns.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import REPO, castillo

AT_80 = {"COLUMNS": "80"}
MODELS = ("meta-llama/Llama-3.3-70B-Instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1")
NAMES = ("meta-llama--Llama-3.3-70B-Instruct", "mistralai--Mixtral-8x7B-Instruct-v0.1")


def _run_grid(out: Path, *extra: str) -> None:
    models = [arg for m in MODELS for arg in ("--model", m)]
    castillo(
        "run", "--backend", "fake", *models, "--corpus", "tiny", "--corpus", "humaneval",
        "--limit", "6", "-n", "3", "--quiet", "--out", str(out), *extra,
    )  # fmt: skip


def _fits(text: str, width: int = 80) -> None:
    long = [line for line in text.splitlines() if len(line) > width]
    assert not long, f"lines over {width} columns:\n" + "\n".join(long)
    assert "…" not in text, text


def _whole_on_a_line(text: str, *names: str) -> None:
    lines = text.splitlines()
    for name in names:
        assert any(name in line for line in lines), f"{name} is broken over lines:\n{text}"


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("terminal") / "grid"
    _run_grid(out, "--max-new-tokens", "80")
    return out


# -- tables ---------------------------------------------------------------------------------


def test_show_fits_80_columns_and_every_number_is_whole(grid: Path) -> None:
    text = castillo("show", str(grid), env=AT_80).stdout
    _fits(text)
    _whole_on_a_line(text, *NAMES)
    rows = json.loads(castillo("show", str(grid), "--json").stdout)
    assert len(rows) == 4
    for row in rows:
        numbers = [f"{row['mean_length']:.1f}", f"{row['mean_std']:.1f}", f"{row['mean_cv']:.3f}"]
        numbers.append(f"{100 * row['share_capped']:.1f}%")
        line = next(line for line in text.splitlines() if line.startswith(row["dataset"]))
        assert all(n in line for n in numbers), (numbers, text)
    assert "CV: mean of the per-prompt std/mean" in " ".join(text.split())  # the caption explains the headers


def test_piped_output_is_not_cut_and_csv_matches_json(grid: Path) -> None:
    text = castillo("show", str(grid), env={"COLUMNS": None}).stdout  # type: ignore[dict-item]
    rows = json.loads(castillo("show", str(grid), "--json").stdout)
    for row in rows:  # one line per row, model and numbers together, whatever the width
        assert any(
            row["model"] in line and row["dataset"] in line and f"{row['mean_length']:.1f}" in line
            for line in text.splitlines()
        ), text
    assert max(len(line) for line in text.splitlines()) > 80
    table = list(csv.DictReader(io.StringIO(castillo("show", str(grid), "--csv").stdout)))
    assert [r["model"] for r in table] == [r["model"] for r in rows]
    assert [float(r["mean_length"]) for r in table] == [r["mean_length"] for r in rows]
    assert [int(r["prompts"]) for r in table] == [r["prompts"] for r in rows]


def test_run_ends_with_the_length_table_of_its_cells(tmp_path: Path) -> None:
    out = tmp_path / "o"
    castillo("run", "--backend", "fake", "--corpus", "tiny", "--limit", "4", "-n", "2", "--out", str(out))
    proc = castillo("run", "--backend", "fake", "--corpus", "humaneval", "--limit", "3", "--out", str(out), env=AT_80)
    shown = castillo("show", str(out), env=AT_80).stdout
    assert "HumanEval" in proc.stdout and "Tiny" not in proc.stdout  # only this run's cells
    (humaneval,) = [line.split() for line in shown.splitlines() if "HumanEval" in line.split()]
    assert humaneval in [line.split() for line in proc.stdout.splitlines()]
    assert "3 new prompt(s)" in proc.stdout
    _fits(proc.stdout)
    as_json = json.loads(
        castillo(
            "run", "--backend", "fake", "--corpus", "humaneval", "--limit", "3", "--out", str(out), "--json"
        ).stdout
    )
    assert [(r["dataset"], r["prompts"]) for r in as_json] == [("HumanEval", 3)]


def test_predict_eval_names_every_predictor_at_80_columns(tmp_path: Path) -> None:
    out = tmp_path / "x"
    castillo(
        "run", "--backend", "fake", "--corpus", "humaneval", "--limit", "40", "-n", "4", "--quiet", "--out", str(out)
    )
    args = (
        "predict",
        "eval",
        str(out),
        "--predictor",
        "mean",
        "--predictor",
        "tfidf-ridge",
        "--predictor",
        "input-size",
    )
    text = castillo(*args, env=AT_80).stdout
    _fits(text)
    result = json.loads(castillo(*args, "--json").stdout)
    lines = text.splitlines()
    for row in result["results"]:
        assert any(line.split()[:2] == [row["predictor"], f"{row['mae']:,.1f}"] for line in lines if line), text
    assert f"best: {result['best']}" in text
    records = list(csv.DictReader(io.StringIO(castillo(*args, "--csv").stdout)))
    assert len(records) == 2 * 4  # two scopes (the model, all) x (baseline + 3 predictors)
    assert {r["predictor"] for r in records} == {"baseline", "mean", "tfidf-ridge", "input-size"}
    assert float(records[1]["mae"]) == pytest.approx(result["results"][0]["mae"])


def test_dry_run_plan_fits_80_columns_with_an_upper_bound_from_the_cap(tmp_path: Path) -> None:
    models = [arg for m in MODELS for arg in ("--model", m)]
    base = ("run", "--backend", "fake", *models, "--corpus", "tiny", "--corpus", "humaneval", "--limit", "50")
    plan = (*base, "--max-new-tokens", "15000", "--out", str(tmp_path / "p"), "--dry-run")
    text = castillo(*plan, "--tokens-per-second", "2500", env=AT_80).stdout
    _fits(text)
    _whole_on_a_line(text, *NAMES)
    assert "≤1,800,000" in text and "≤7,500,000" in text  # prompts x n x cap: tiny's 12, humaneval's 50
    total = " ".join(text.split()[text.split().index("total:") :])
    assert "at most 18,600,000 generated tokens" in total and "at 2,500 tokens/s: at most 2.1 h" in total
    cells = json.loads(castillo(*plan, "--json").stdout)["cells"]
    assert all(c["max_tokens"] == c["remaining"] * 10 * 15000 for c in cells)
    records = list(csv.DictReader(io.StringIO(castillo(*plan, "--csv").stdout)))
    assert [int(r["max_tokens"]) for r in records] == [c["max_tokens"] for c in cells]


def test_dry_run_probe_times_the_upper_bound(tmp_path: Path) -> None:
    plan = ("run", "--backend", "fake", "--corpus", "tiny", "--limit", "3", "--out", str(tmp_path / "p"), "--dry-run")
    text = castillo(*plan, "--probe", env=AT_80).stdout
    total = " ".join(text[text.index("total:") :].split())
    assert re.search(r"at most 30,720 generated tokens .* tokens/s \(probed\): at most \d", total), total
    (cell,) = json.loads(castillo(*plan, "--probe", "--json").stdout)["cells"]
    assert cell["max_seconds"] > 0 and "expected_tokens" not in cell


def test_list_and_plugins_fit_80_columns() -> None:
    for args in (("plugins",), ("list", "backends"), ("list", "corpora"), ("list", "metrics"), ("list", "presets")):
        text = castillo(*args, env=AT_80).stdout
        _fits(text)
    assert "tfidf-ridge" in castillo("list", "predictors", env=AT_80).stdout


def test_a_table_never_cuts_numbers_on_any_width() -> None:
    from rich.console import Console

    from castillo_core.cli.tables import Column, print_table

    columns = [Column("model"), Column("dataset"), *(Column(h, numeric=True) for h in ("prompts", "mean", "tokens"))]
    columns.append(Column("note", long=True))
    rows = [[NAMES[0], "DollyDataset", "2,000", "1234.5", "30,000,000", "a long note " * 8]]
    for width, layout in ((200, "flat"), (100, "flat-folded"), (80, "grouped-folded"), (40, "vertical")):
        out = Console(width=width, file=io.StringIO(), color_system=None)
        assert print_table(out, columns, rows, group=True) == layout
        text = out.file.getvalue()
        _fits(text, width)
        assert all(n in text for n in ("2,000", "1234.5", "30,000,000", "DollyDataset")), text
        _whole_on_a_line(text, NAMES[0])


# -- prompts --------------------------------------------------------------------------------


def test_prompts_prints_text_exactly(tmp_path: Path) -> None:
    text = castillo("prompts", "--corpus", "humaneval", "--limit", "1", env=AT_80).stdout
    assert "List[float]" in text
    source = tmp_path / "p.jsonl"
    tricky = ["[bold]not bold[/bold] and [red]x", "a \\[escaped] [link=https://x.org]y[/link]", "list[int] :smile:"]
    source.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in tricky))
    shown = castillo("prompts", "--corpus", "jsonl", "--source", str(source)).stdout
    for t in tricky:
        assert t in shown, shown
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "x" * 500}) + "\n")
    piped = {"COLUMNS": None}  # type: ignore[dict-item]
    shown = castillo("prompts", "--corpus", "jsonl", "--source", str(long), env=piped).stdout
    assert "x" * 200 + "... (+300 characters; --full or --json for all)" in shown
    assert "x" * 500 in castillo("prompts", "--corpus", "jsonl", "--source", str(long), "--full", env=piped).stdout


# -- help -----------------------------------------------------------------------------------

SAMPLING = ("-n", "--temperature", "--top-p", "--top-k", "--min-p", "--repetition-penalty", "--max-new-tokens")


def test_dash_h_everywhere_examples_and_sampling_defaults() -> None:
    top = castillo("-h").stdout
    assert "Examples:" in top and "castillo show runs/demo --csv" in top
    for args in (("run",), ("show",), ("prompts",), ("list",), ("predict", "eval"), ("simulate",)):
        assert castillo(*args, "-h").stdout.startswith("Usage: castillo"), args
    entries = _option_entries(castillo("run", "-h", env=AT_80).stdout)
    for option in (*SAMPLING, "--max-prompt-tokens", "--seed", "--model-defaults"):
        (entry,) = [e for e in entries if re.match(rf"{option}[ ,]", e)]
        words, _, default = entry.partition("[default: ")
        assert default.strip(" ]"), f"{option} shows no default: {entry}"
        assert len(words.split()) > 3, f"{option} has no help text: {entry}"
    (temperature,) = [e for e in entries if e.startswith("--temperature")]
    assert "[default: 1.0; the model's own with --model-" in temperature  # click may wrap at the hyphen


def _option_entries(help_text: str) -> list[str]:
    """Each option of a --help page as one line (click wraps long entries)."""
    entries: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"\s{2}-", line):
            entries.append(line.strip())
        elif entries and line.startswith("   ") and line.strip():
            entries[-1] += " " + line.strip()
    return entries


# -- progress -------------------------------------------------------------------------------


def test_log_json_prints_json_lines_only(tmp_path: Path) -> None:
    proc = castillo(
        "run", "--backend", "fake", "--corpus", "tiny", "-n", "2", "--log-json", "--out", str(tmp_path / "o")
    )
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    kinds = [e["event"] for e in events]
    assert kinds[0] == "message" and "default model fake/model" in events[0]["text"]
    assert kinds[1:3] == ["run_start", "cell_start"] and kinds[-2:] == ["cell_end", "run_end"]
    end = events[-2]
    assert end["status"] == "done" and end["new_prompts"] == 12 and end["samples"] == 24
    assert end["tokens"] > 0 and end["seconds"] > 0 and end["tokens_per_s"] > 0
    assert events[-1]["status"] == "done" and events[-1]["tokens"] == end["tokens"]
    failed = castillo(
        "run", "--backend", "nope", "--corpus", "tiny", "--log-json", "--out", str(tmp_path / "f"), check=False
    )
    (error,) = [json.loads(line) for line in failed.stderr.splitlines()]
    assert failed.returncode == 2 and error["event"] == "error" and "unknown backend 'nope'" in error["text"]


def test_log_json_turns_log_records_into_events() -> None:
    from castillo_core.engine.progress import JsonProgress, json_logging

    stream = io.StringIO()
    progress = JsonProgress(stream=stream)
    with json_logging(progress):
        logging.getLogger("castillo_test").warning("disk at %d%%", 93)
    (event,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert event["event"] == "log" and event["level"] == "warning" and event["text"] == "disk at 93%"


def test_run_end_counts_cells_an_executor_reports_under_one_label() -> None:
    from castillo_core.engine.progress import JsonProgress

    stream = io.StringIO()
    with JsonProgress(stream=stream) as progress:  # as the Ray executor reports: one label, then each cell
        progress.start_run(2)
        progress.start_cell("2 cell(s) on Ray, 4 task(s)", 10, 0)
        progress.advance(10, 700)
        progress.end_cell("a x d", "done")
        progress.end_cell("b x d", "done")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    end = events[-1]
    assert end["event"] == "run_end" and end["status"] == "done" and end["cell_statuses"] == {"done": 2}
    assert end["new_prompts"] == 10 and end["tokens"] == 700


def test_plain_progress_on_a_pipe_counts_samples_tokens_and_eta(tmp_path: Path) -> None:
    args = ("run", "--backend", "fake", "--corpus", "tiny", "--limit", "4", "-n", "3", "-B", "delay=0.8")
    args += ("--out", str(tmp_path / "o"))
    stderr = castillo(*args, env={"CASTILLO_PROGRESS_SECONDS": "0.3"}).stderr
    lines = [line for line in stderr.splitlines() if line.startswith("fake--model x Tiny: ") and "prompts," in line]
    assert "fake--model x Tiny: 4 prompts, 0 already stored" in stderr
    assert len(lines) >= 3, stderr
    waiting = [line for line in lines if "ETA after the first prompt" in line]
    counting = [line for line in lines if re.search(r"\d/4 prompts, \d+ samples, [\d,]+ tok, [\d,]+ tok/s", line)]
    assert waiting and counting, stderr
    assert re.search(r"ETA 0:00:0\d", counting[-1]), counting
    assert "fake--model x Tiny: done, 4/4 prompts, 12 samples" in stderr


def test_eta_is_the_pace_of_finished_prompts() -> None:
    from castillo_core.engine.progress import CellInfo, Tally

    tally = Tally("m x d", total=10, already=2, info=CellInfo(n=5))
    assert tally.eta is None and "ETA after the first prompt" in tally.line()
    tally.start -= 20.0  # 20 s in, two prompts done
    tally.add(2, 300)
    assert tally.remaining == 6 and tally.samples == 10
    assert tally.eta == pytest.approx(6 * 10.0, rel=0.01)
    assert tally.rate == pytest.approx(15.0, rel=0.01)


# -- a real terminal ------------------------------------------------------------------------

tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class _Tmux:
    def __init__(self, width: int) -> None:
        self.name = f"castillo-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", "50", "bash --norc --noprofile"],
            check=True,
            env=env,
        )

    def send(self, command: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, command, "Enter"], check=True)

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True, check=True
        ).stdout

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


def _castillo_command(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "castillo_core.cli", *args])


@tmux
@pytest.mark.parametrize("width", [80, 160])
def test_live_progress_and_tables_in_a_real_terminal(width: int, grid: Path, tmp_path: Path) -> None:
    term = _Tmux(width)
    try:
        term.send(f"cd {shlex.quote(str(REPO))} && unset COLUMNS && clear")
        out = tmp_path / "live"
        models = [arg for m in MODELS[:1] for arg in ("--model", m)]
        run = _castillo_command(
            "run", "--backend", "fake", *models, "--corpus", "tiny", "-n", "3", "-B", "delay=0.4", "-B", "batch=2",
            "--out", str(out),
        )  # fmt: skip
        term.send(f"{run}; echo EXIT=$?")
        live = term.wait_for(r"\d+/12 prompts +\d+ samples +[\d,]+ tok +[\d,]+ tok/s .*ETA \d")
        assert NAMES[0] in live
        screen = term.wait_for(r"EXIT=\d+")
        assert "EXIT=0" in screen
        assert f"{NAMES[0]} x Tiny: done, 12/12 prompts, 36 samples" in screen.replace("\n", "")
        term.send("clear; " + _castillo_command("show", str(grid)) + "; echo SHOWN-$((6 * 7))")
        shown = term.wait_for(r"SHOWN-42")
        lines = [line for line in shown.splitlines() if line.strip()]
        assert all(len(line) <= width for line in lines)
        assert "…" not in shown
        _whole_on_a_line(shown, *NAMES)
        if width >= 160:  # wide enough for one line per row: model, dataset and numbers together
            assert any(NAMES[0] in line and "HumanEval" in line for line in lines), shown
        else:  # models become heading lines, rows keep every number
            assert any(line.strip() == NAMES[0] for line in lines), shown
    finally:
        term.close()
