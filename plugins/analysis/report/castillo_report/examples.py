"""Example texts: per model x dataset, the shortest and the longest response, with their prompts.

The statistics never read texts; the rows to show are chosen from the lengths
(:func:`castillo_report.data.compute` picks, per cell, the row holding the shortest and
the row holding the longest response), then only those rows' texts are kept, read with a
filter on their sample ids so a 140,000-row dataset's texts are never held at once.
Texts are cut to :data:`RESPONSE_CHARS` characters (the page says how many were left out).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

RESPONSE_CHARS = 1_200
PROMPT_CHARS = 400
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _cut(text: Any, limit: int) -> tuple[str | None, int]:
    """``text`` as printable text of at most ``limit`` characters, and its full length."""
    if text is None:
        return None, 0
    text = _UNPRINTABLE.sub("\ufffd", str(text))
    return (text if len(text) <= limit else text[:limit]), len(text)


def read_examples(source: Path, picks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``picks`` (model, dataset, kind, sample_id, config_hash, tokens) with their texts filled in.

    Each gets ``text`` and ``prompt`` (None where the dataset holds no text: a run with
    ``--no-text``) and ``text_chars``/``prompt_chars``, the full lengths.
    """
    if not picks:
        return []
    import pyarrow.dataset as ds

    from castillo_core import read_table

    column = "response"
    wanted = sorted({p["sample_id"] for p in picks if p.get("sample_id") is not None})
    names = ["sample_id", "config_hash", "model", "dataset", "prompt_text", "shortest_response", "longest_response"]
    table = read_table(source, "prompts", columns=names, filter=ds.field("sample_id").isin(wanted)) if wanted else None
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    if table is not None and table.num_rows:
        for row in table.to_pylist():
            key = (row.get("sample_id"), row.get("config_hash"), row.get("model"), row.get("dataset"))
            found.setdefault(key, row)
    out = []
    for pick in picks:
        row = found.get((pick["sample_id"], pick.get("config_hash"), pick["model"], pick["dataset"]), {})
        text, text_chars = _cut(row.get(f"{pick['kind']}_{column}"), RESPONSE_CHARS)
        prompt, prompt_chars = _cut(row.get("prompt_text"), PROMPT_CHARS)
        out.append({**pick, "text": text, "text_chars": text_chars, "prompt": prompt, "prompt_chars": prompt_chars})
    return out
