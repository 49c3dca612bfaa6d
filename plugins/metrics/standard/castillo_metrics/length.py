"""The ``length`` metric: characters, words and lines of every response.

Tokens come from the backend (``output_tokens``, counted with the model's tokenizer);
these are the text-side lengths that length predictors and readers also ask for.
Counting runs over the whole batch at once (one join, one encode, a few numpy passes)
rather than calling ``str.split`` per response, which alone would cost the engine a
noticeable share of its throughput.

Definitions (each equal to the plain-Python expression, which the tests check):
- ``n_chars``: ``len(text)``, Unicode code points.
- ``n_words``: ``len(text.split())``, runs of non-whitespace (Unicode whitespace).
- ``n_lines``: ``text.count("\\n")`` plus one when the text does not end with a newline;
  an empty text has 0 lines.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from castillo_core import Column, Metric, ResponseBatch, hookimpl, lazy_module

np = lazy_module("numpy")


_LAST_SPACE = 0x3000  # the highest code point for which str.isspace() is true


@functools.cache
def _space_tables() -> tuple[Any, Any]:
    """Whitespace lookup tables: by code point (last entry: "beyond") and by UTF-8 byte."""
    space = np.array([chr(c).isspace() for c in range(_LAST_SPACE + 2)], dtype=bool)
    byte_space = space[:256].copy()
    byte_space[128:] = False  # in UTF-8, bytes >= 0x80 belong to multi-byte characters
    return space, byte_space


_WIDE_SPACES = tuple(chr(c) for c in range(128, _LAST_SPACE + 1) if chr(c).isspace())


_CHUNK = 1 << 18
"""Characters per vectorized chunk: small enough to stay in cache and in malloc's reused
memory (one 20-MB pass per step over a whole flush was 3x slower, mostly page faults)."""


def text_lengths(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Characters, words and lines of each text, vectorized over chunks of texts."""
    count = len(texts)
    chars = np.fromiter(map(len, texts), dtype=np.int64, count=count)
    words = np.zeros(count, dtype=np.int64)
    lines = np.zeros(count, dtype=np.int64)
    if count == 0:
        return chars, words, lines
    ends = np.cumsum(chars)
    start = 0
    while start < count:
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK, side="right")), start + 1)
        words[start:stop], lines[start:stop] = _chunk_lengths(texts[start:stop], chars[start:stop])
        start = stop
    return chars, words, lines


def _chunk_lengths(texts: Sequence[str], chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Words and lines of a few texts at once.

    Works on bytes: ASCII text as is, other text as UTF-8 (whose bytes below 0x80 are
    always whole characters, so ASCII whitespace and newlines are found exactly). Only a
    chunk that holds a non-ASCII whitespace character (no-break space, ideographic
    space, ...) takes the slower UTF-32 path, to stay exactly equal to ``str.split``.
    """
    count = len(texts)
    joined = "".join(texts)
    if not joined:
        return np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    if joined.isascii():  # O(1) for str
        data: np.ndarray = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
        sizes = chars
        table = _space_tables()[1]
    elif not any(space in joined for space in _WIDE_SPACES):
        parts = [text.encode("utf-8", "surrogatepass") for text in texts]
        data = np.frombuffer(b"".join(parts), dtype=np.uint8)
        sizes = np.fromiter(map(len, parts), dtype=np.int64, count=count)
        table = _space_tables()[1]
    else:
        data = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        data = np.minimum(data, _LAST_SPACE + 1)
        sizes = chars
        table = _space_tables()[0]
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    # One spare element at the end keeps reduceat's indices in range when trailing texts are empty.
    space = np.empty(len(data) + 1, dtype=bool)
    if table is _space_tables()[0]:
        np.take(table, data, out=space[:-1])
    else:
        _ascii_space(data, space[:-1])
    space[-1] = True
    # A word starts where a non-space follows a space (True > False), or at a text's first character.
    word_start = np.empty_like(space)
    word_start[0] = not space[0]
    np.greater(space[:-1], space[1:], out=word_start[1:])
    starts = offsets[:-1]
    nonempty = sizes > 0
    first = starts[nonempty]
    word_start[first] = ~space[first]
    words = _segment_counts(word_start, starts)
    newline = np.empty_like(space)
    np.equal(data, 10, out=newline[:-1])
    newline[-1] = False
    lines = _segment_counts(newline, starts)
    words[~nonempty] = 0
    lines[~nonempty] = 0
    lines[nonempty] += ~newline[offsets[1:][nonempty] - 1]
    return words, lines


def _ascii_space(data: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = chr(data[i]).isspace()`` for bytes: 9-13 and 28-32 (comparisons beat a lookup)."""
    low = data <= 32
    np.greater_equal(data, 28, out=out)
    band = data >= 9
    band &= data <= 13
    out |= band
    out &= low


def _segment_counts(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """True values of ``mask`` from each start to the next (int32 sums: half the traffic of int64)."""
    return np.add.reduceat(mask.view(np.uint8), starts, dtype=np.int32).astype(np.int64)


class LengthMetric(Metric):
    """Characters, words and lines per response; their mean and max per prompt."""

    name = "length"
    description = "characters, words and lines per response (mean and max per prompt)"
    version = "1"

    _KINDS = ("n_chars", "n_words", "n_lines")

    def response_columns(self) -> list[Column]:
        return [
            Column("n_chars", "int64", "characters (Unicode code points) of the response text", role="count"),
            Column("n_words", "int64", "whitespace-separated words of the response text (str.split)", role="count"),
            Column(
                "n_lines",
                "int64",
                "lines of the response text (newlines, plus an unterminated last line)",
                role="count",
            ),
        ]

    def prompt_columns(self) -> list[Column]:
        out = []
        for kind in self._KINDS:
            what = kind.removeprefix("n_")
            out.append(Column(f"{kind}_mean", "float64", f"mean {what} per response of this prompt"))
            out.append(Column(f"{kind}_max", "int64", f"most {what} of any response of this prompt", role="count"))
        return out

    def score(self, batch: ResponseBatch) -> Mapping[str, Sequence[Any] | np.ndarray]:
        chars, words, lines = text_lengths(batch.texts)
        return {"n_chars": chars, "n_words": words, "n_lines": lines}

    def aggregate(self, batch: ResponseBatch) -> Mapping[str, Sequence[Any] | np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if batch.n_prompts == 0:
            return {c.name: np.empty(0) for c in self.prompt_columns()}
        for kind in self._KINDS:
            values = batch.column(kind)
            out[f"{kind}_mean"] = batch.reduce(values, "mean")
            out[f"{kind}_max"] = batch.reduce(values, "max")
        return out


@hookimpl
def castillo_register_metrics(register: Any) -> None:
    register(LengthMetric)
