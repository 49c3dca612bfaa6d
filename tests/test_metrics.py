"""The standard metrics (castillo-metrics): length counts, v1-length and repetition.

Fixtures are written here: texts with known loops, and a third party's metric package
that a real `castillo run` must pick up through its entry point.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from castillo_core import MetricContext, ResponseBatch
from castillo_core.engine.dataset import read_table
from tests.helpers import castillo, make_distribution

length = pytest.importorskip("castillo_metrics.length", reason="install plugins/metrics/standard")
degeneration = pytest.importorskip("castillo_metrics.degeneration")
repetition = pytest.importorskip("castillo_metrics.repetition")

RUN = ("run", "--backend", "fake", "--corpus", "tiny", "--quiet", "--seed", "5")


def _expected(text: str) -> tuple[int, int, int]:
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return len(text), len(text.split()), lines


@pytest.mark.parametrize("chunk", [1 << 18, 7])
def test_length_counts_equal_python_definitions(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(length, "_CHUNK", chunk)  # 7 forces many chunks and single-text chunks
    rng = random.Random(0)
    alphabets = [
        "ab \n\t",  # ASCII
        "ab \n\téΩ😀\r\x0b\x1f",  # UTF-8 without wide spaces
        "ab \n\u00a0\u3000\u2029\x1c\x85é",  # wide (non-ASCII) whitespace: the UTF-32 path
    ]
    for alphabet in alphabets:
        texts = ["", "a", "a\n", "\n\n", "  two  words ", "", "\ud800 lone surrogate"]
        texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)] + [""]
        chars, words, lines = length.text_lengths(texts)
        assert [tuple(x) for x in zip(chars, words, lines, strict=True)] == [_expected(t) for t in texts]


def test_length_metric_aggregates_per_prompt() -> None:
    texts = ["one two", "three\nfour five", "six", "a b c d"]
    batch = ResponseBatch(texts, np.array([2, 3, 1, 4]), ["stop"] * 4, np.array([0, 2, 4]), 100)
    metric = length.LengthMetric(MetricContext(max_new_tokens=100, n=2))
    scores = metric.score(batch)
    assert list(scores["n_words"]) == [2, 3, 1, 4] and list(scores["n_lines"]) == [1, 2, 1, 1]
    batch._columns.update({k: np.asarray(v) for k, v in scores.items()})
    agg = metric.aggregate(batch)
    assert list(agg["n_words_mean"]) == [2.5, 2.5] and list(agg["n_words_max"]) == [3, 4]
    assert list(agg["n_chars_max"]) == [15, 7]


PROSE = (
    "The harbour was quiet that morning. Fishermen mended their nets while gulls argued over scraps, "
    "and the baker on the corner opened later than usual because his daughter had a fever. "
)
LOOPS = {
    "exact loop": PROSE + "I am sorry, I cannot help with that. " * 300,
    "counting loop": PROSE + "".join(f"{i}. {1900 + i}: Frédéric Passy for his work on peace\n" for i in range(400)),
    "loop cut mid-word": PROSE + "| LG | X | 4 people | Internet |\n" * 200 + "| LG | X | 4 pe",
    "loop with variations": PROSE
    + "".join(
        f"The answer is {'deep' if i % 3 else 'machine'} learning or {'neural' if i % 5 else 'big'} "
        f"networks but the most common term is AI.\n\n"
        for i in range(300)
    ),
}
CLEAN = {
    "prose": PROSE * 3 + "In the end everyone went home.",
    "code": "def f(x):\n" + "".join(f"    y{i} = x * {i} + {i * i}\n" for i in range(60)) + "    return x\n",
    "recovered loop": PROSE + "I am sorry. " * 100 + "Anyway, here is the recipe you asked for: flour, eggs and "
    "milk, whisked and left to rest for an hour before frying in butter.",
    "short repeat": "ha ha ha ha ha",
    "empty": "",
}


def test_repetition_flags_loops_that_run_to_the_end() -> None:
    scores = repetition.repetition_scores(list(LOOPS.values()))
    assert scores.flag.all(), dict(zip(LOOPS, scores.flag, strict=True))
    assert (scores.period > 0).all() and (scores.score > 1 - repetition.MAX_COMPRESSION).all()
    assert scores.score[0] == 1.0 and np.isnan(scores.compression[0])  # exact loop: the zlib-free fast path
    assert 0 < scores.compression[3] < repetition.MAX_COMPRESSION  # variations: judged by compression


def test_repetition_leaves_text_that_does_not_end_in_a_loop() -> None:
    scores = repetition.repetition_scores(list(CLEAN.values()))
    assert not scores.flag.any(), dict(zip(CLEAN, scores.flag, strict=True))
    assert scores.score[2] == 0.0 and scores.period[2] == 0  # the gate closes: the end is fresh text


def _essay(words: int, seed: int = 1) -> str:
    """Text that never repeats itself: random words from a small vocabulary."""
    rng = random.Random(seed)
    vocabulary = "harbour quiet morning fishermen mended nets gulls argued scraps baker corner opened later".split()
    return " ".join(rng.choice(vocabulary) for _ in range(words)) + "."


def test_repetition_looks_only_at_the_tail() -> None:
    loop_then_essay = "buy now! " * 5000 + _essay(2000)
    essay_then_loop = _essay(2000) + "buy now! " * 5000
    flags = repetition.repetition_scores([loop_then_essay, essay_then_loop]).flag
    assert list(flags) == [False, True]


def _batch(lengths: list[list[int]], cap: int) -> ResponseBatch:
    flat = [x for row in lengths for x in row]
    offsets = np.cumsum([0] + [len(r) for r in lengths])
    texts = ["text"] * len(flat)
    reasons = ["length" if x >= cap else "stop" for x in flat]
    return ResponseBatch(texts, np.array(flat), reasons, offsets, cap)


def test_v1_length_flags_the_samples_v1_removes() -> None:
    rows = [
        [100, 120, 15_000, 110],  # one hit the cap: only it
        [8_600, 100, 90, 80, 95, 100, 85, 90, 100, 70],  # std > 2 mean and max > 8,499: everything above 8,499
        [9_000, 9_100, 8_000, 9_200],  # long but steady: nothing
        [15_000, 15_000],  # all capped
    ]
    flags, score = degeneration.v1_length_scores(_batch(rows, 15_000))
    expected = [[False, False, True, False], [True] + [False] * 9, [False] * 4, [True, True]]
    assert flags.tolist() == [x for row in expected for x in row]
    assert score[2] == 1.0


def test_v1_length_scales_with_the_cap() -> None:
    cap = 1024  # high-variance limit: 1024 * 8499 // 15000 = 580
    rows = [[1023, 10, 12], [600, 10, 10, 10, 10, 10, 10, 10, 10, 10], [570, 10, 10, 10, 10, 10, 10, 10, 10, 10]]
    flags, _ = degeneration.v1_length_scores(_batch(rows, cap))
    assert flags.tolist() == [True, False, False, True] + [False] * 9 + [False] * 10


THIRD_PARTY = '''
import numpy as np
from castillo_core import Column, Metric, hookimpl


class Vowels(Metric):
    """A stranger's metric: the share of vowels in each response."""

    name = "vowels"

    def response_columns(self):
        return [Column("vowel_share", "float64", "share of vowels")]

    def prompt_columns(self):
        return [Column("vowel_share_max", "float64", "largest share of vowels")]

    def score(self, batch):
        return {"vowel_share": np.array([sum(c in "aeiou" for c in t) / max(len(t), 1) for t in batch.texts])}

    def aggregate(self, batch):
        return {"vowel_share_max": batch.reduce(batch.column("vowel_share"), "max")}


@hookimpl
def castillo_register_metrics(register):
    register(Vowels)
'''


def test_a_third_party_metric_adds_columns_to_both_tables(tmp_path: Path) -> None:
    site = make_distribution(tmp_path / "site", "castillo-vowels", "vowels", "castillo_vowels", THIRD_PARTY)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(site)}
    castillo(
        *RUN,
        "-n",
        "3",
        "--max-new-tokens",
        "64",
        "--metric",
        "vowels",
        "--metric",
        "length",
        "--out",
        str(out),
        env=env,
    )
    prompts, responses = read_table(out, "prompts"), read_table(out, "responses")
    assert {"vowel_share_max", "n_words_mean"} <= set(prompts.column_names)
    assert {"vowel_share", "n_words"} <= set(responses.column_names)
    # Plugin columns sit between castillo's own columns and the provenance at the end.
    assert prompts.column_names[-2:] == ["config_hash", "castillo_version"]
    texts = responses.column("text").to_pylist()
    shares = responses.column("vowel_share").to_pylist()
    assert shares == [sum(c in "aeiou" for c in t) / max(len(t), 1) for t in texts]
    assert responses.column("n_words").to_pylist() == [len(t.split()) for t in texts]


def test_standard_metrics_in_a_real_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    castillo(
        *RUN, "-n", "4", "--max-new-tokens", "40", "--metric", "length", "--metric", "degeneration", "--out", str(out)
    )
    prompts, responses = read_table(out, "prompts"), read_table(out, "responses")
    tokens = np.array(responses.column("output_tokens").to_pylist())
    capped = np.array(responses.column("finish_reason").to_pylist()) == "length"
    assert capped.any()
    assert np.array_equal(np.array(responses.column("degenerate_v1_length").to_pylist()), tokens >= 39)
    # The fake backend's texts are one word repeated: loops whenever they are long enough to judge.
    texts = responses.column("text").to_pylist()
    long_enough = np.array([len(t.strip()) >= repetition.MIN_TAIL for t in texts])
    assert np.array_equal(np.array(responses.column("degenerate_repetition").to_pylist()), long_enough)
    counts = dict(
        zip(prompts.column("sample_id").to_pylist(), prompts.column("n_degenerate_v1_length").to_pylist(), strict=True)
    )
    per_prompt: dict[str, int] = {}
    for sid, flag in zip(
        responses.column("sample_id").to_pylist(), responses.column("degenerate_v1_length").to_pylist(), strict=True
    ):
        per_prompt[sid] = per_prompt.get(sid, 0) + int(flag)
    assert counts == per_prompt
