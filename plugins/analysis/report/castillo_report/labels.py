"""How the report labels things: short model labels, their order, and number formats.

One place for every format the page, the Markdown and the figures share, so a rate reads
``12.3%`` in a table cell, in a heatmap cell and on its colour bar alike.

Model labels (docs/report.md states the rule for users):

- the organisation is dropped (``meta-llama--Llama-3.2-1B-Instruct`` -> ``Llama-3.2-1B``),
  as are the ``-`` separated words ``Instruct``, ``it``, ``chat`` and ``hf`` (any case) and
  a ``.gguf`` ending;
- a model whose shortened name holds no digit (no version or size: ``fake--model``) and
  two models that would get the same label keep their full ids;
- control characters become ``?`` and a label is at most 32 characters (cut with ``…``).

Models are ordered by family, the label's leading letters (``gemma``, ``Llama``,
``Qwen``...), compared without case, then by size ascending (the first ``-`` separated
word such as ``1B``, ``135M`` or ``8x7B``; a model without one comes after its family's
sized ones), then by label.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DROPPED = {"instruct", "it", "chat", "hf"}
_SIZE = re.compile(r"^(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])$", re.IGNORECASE)
_FAMILY = re.compile(r"[A-Za-z]+")
LABEL_LIMIT = 32
NOT_RECORDED = "not recorded"


def clean(text: str, limit: int) -> str:
    """Text from the data for a label: control characters as ``?``, at most ``limit`` characters."""
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stem(model: str) -> str:
    """The label before collisions are resolved (may be empty)."""
    name = [p for p in re.split(r"--|/", model) if p]
    stem = name[-1] if name else model
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    stem = "-".join(w for w in stem.split("-") if w and w.lower() not in _DROPPED)
    return stem if any(c.isdigit() for c in stem) else ""


def model_labels(models: Iterable[str]) -> dict[str, str]:
    """Each model id's short label (see the module's rule), unique among ``models``."""
    models = list(dict.fromkeys(models))
    stems = {m: _stem(m) or m for m in models}
    taken = Counter(clean(s, LABEL_LIMIT) for s in stems.values())
    labels = {}
    for model in models:
        label = clean(stems[model], LABEL_LIMIT)
        labels[model] = label if taken[label] == 1 else clean(model, LABEL_LIMIT)
    if len(set(labels.values())) < len(labels):  # full ids cut to the same 32 characters: number them
        seen: Counter[str] = Counter()
        for model in models:
            seen[labels[model]] += 1
            if seen[labels[model]] > 1:
                labels[model] = clean(labels[model], LABEL_LIMIT - 4) + f" #{seen[labels[model]]}"
    return labels


def model_size(label: str) -> float:
    """Parameters the label names (``1B`` -> 1e9, ``135M`` -> 1.35e8, ``8x7B`` -> 5.6e10), or inf."""
    for word in label.split("-"):
        match = _SIZE.match(word)
        if match:
            experts = int(match.group(1)) if match.group(1) else 1
            unit = 1e9 if match.group(3).lower() == "b" else 1e6
            return experts * float(match.group(2)) * unit
    return math.inf


def model_family(label: str) -> str:
    match = _FAMILY.search(label)
    return match.group(0).lower() if match else label.lower()


def order_models(models: Iterable[str], labels: dict[str, str] | None = None) -> list[str]:
    """Model ids by family, then size ascending, then label (the order of every figure and table)."""
    models = list(dict.fromkeys(models))
    labels = labels or model_labels(models)

    def key(model: str) -> tuple[str, float, str, str]:
        label = labels[model]
        return model_family(label), model_size(label), label.lower(), model

    return sorted(models, key=key)


# -- numbers ---------------------------------------------------------------------------


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal; a share above 0 that would read 0.0% reads <0.1%."""
    if value is None or not math.isfinite(value):
        return "–"
    if 0 < value < 0.0005:
        return "<0.1%"
    return f"{value * 100:.1f}%"


def tokens(value: float | None) -> str:
    """A length in tokens, whole, with thousands separators."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.0f}"


def ratio(value: float | None) -> str:
    """A coefficient of variation (a ratio near 0-3), two decimals."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}"


FORMATS = {"percent": percent, "tokens": tokens, "ratio": ratio}


def tick(value: float) -> str:
    """An axis number as plain text (no mathtext): 0.5, 20, 1,000, 15k."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1000:g}k"
    if magnitude >= 1:
        return f"{value:,.10g}"
    return f"{value:.3g}"
