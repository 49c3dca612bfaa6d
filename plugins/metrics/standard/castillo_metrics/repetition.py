"""Repetition loops found from the text alone: a loop that runs to the end of the text.

A response that degenerates repeats itself until the token cap cuts it off, so the
signal sits at the *end* of the text. For each text we look only at its tail (the last
``WINDOW`` characters; this is the fast path that bounds the cost of a 60,000-character
response), with every digit mapped to ``0`` so that counting loops ("66. 1966: ...",
"67. 1967: ...") repeat exactly, and trailing whitespace stripped:

1. **Tail loop** (a repeated n-gram at the end): the final ``NEEDLE``-byte n-gram of
   the tail is looked up earlier in the tail. ``period`` is the distance back to its
   previous occurrence (0 when there is none). A text that ends by repeating something
   it said shortly before has a period; a text that ends on a fresh sentence has none,
   and is never flagged. This gate costs one ``bytes.rfind``.
2. **Exact loop** (fast path): when the whole tail repeats with that period
   (``tail[p:] == tail[:-p]``, one ``memcmp``) and holds at least ``MIN_PERIODS``
   periods, the text is a loop by definition; its score is 1 and zlib is skipped.
3. **Compression ratio** of the tail otherwise (zlib, level 1): compressed bytes / raw
   bytes. Natural prose and code compress to 0.3-0.5, a loop with variations to a few
   percent. Computed only for texts whose gate is open; NaN otherwise (or on the exact
   fast path).

A response is flagged when it is an exact loop, or when its gate is open and the tail
compresses below ``MAX_COMPRESSION``; its score is 1 for an exact loop, ``1 -
compression`` for an open gate, 0 otherwise. The constants were chosen on CASTILLO
v1's test split: docs/metrics.md gives the sweep, the precision and the recall.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from castillo_core import lazy_module

np = lazy_module("numpy")


WINDOW = 8192
"""Characters at the end of a text that are analysed (the fast path for long texts)."""
NEEDLE = 32
"""Bytes of the final n-gram whose repeats open the gate."""
MIN_TAIL = 2 * NEEDLE
"""Shorter tails (after stripping trailing whitespace) are never flagged: too little text."""
MIN_PERIODS = 8
"""An exactly periodic tail is flagged without zlib when it holds this many periods."""
MAX_COMPRESSION = 0.16
"""Tails that compress below this ratio (and end in a repeat) are loops."""

_DIGITS = bytes.maketrans(b"123456789", b"000000000")


@dataclass(frozen=True)
class RepetitionScores:
    """Per text: loop period (0: none), tail compression ratio (NaN if skipped), score, flag."""

    period: np.ndarray
    compression: np.ndarray
    score: np.ndarray
    flag: np.ndarray


def repetition_scores(
    texts: Sequence[str | None], window: int = WINDOW, max_compression: float = MAX_COMPRESSION
) -> RepetitionScores:
    """Score many texts; one zlib compressor is reused (full flush between texts).

    Creating a zlib stream per text costs more than compressing a short one; a
    ``Z_FULL_FLUSH`` resets the history, so each text is still compressed on its own.
    The stream's 2-byte header is flushed out before the first text, so every text is
    measured alike: a text's ratio never depends on where it sits in a batch (a resumed
    run then equals an uninterrupted one).
    """
    count = len(texts)
    # Python lists in the loop, numpy after it: item assignment into numpy costs more.
    periods = [0] * count
    ratios = [math.nan] * count
    loops = [False] * count
    compressor = zlib.compressobj(1)
    full_flush = zlib.Z_FULL_FLUSH
    compressor.flush(full_flush)  # the header goes out now, not with the first text
    digits, needle, min_tail, min_periods = _DIGITS, NEEDLE, MIN_TAIL, MIN_PERIODS
    for index, text in enumerate(texts):
        if not text:
            continue
        if len(text) > window:
            text = text[-window:]
        tail = text.encode("utf-8", "surrogatepass").translate(digits).rstrip()
        size = len(tail)
        if size < min_tail:
            continue
        previous = tail.rfind(tail[-needle:], 0, size - 1)
        if previous < 0:
            continue
        step = size - needle - previous
        periods[index] = step
        if step * min_periods <= size and tail.startswith(tail[step:]):
            loops[index] = True
            continue
        ratios[index] = (len(compressor.compress(tail)) + len(compressor.flush(full_flush))) / size
    period = np.array(periods, dtype=np.int64)
    compression = np.array(ratios, dtype=np.float64)
    exact = np.array(loops, dtype=bool)
    measured = ~np.isnan(compression)
    score = np.zeros(count)
    score[measured] = np.clip(1.0 - compression[measured], 0.0, 1.0)
    score[exact] = 1.0
    flag = exact | (measured & (np.nan_to_num(compression, nan=math.inf) < max_compression))
    return RepetitionScores(period, compression, score, flag)
