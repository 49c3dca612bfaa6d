"""The report's drawings, with matplotlib's Agg canvas into PNG files.

matplotlib is imported inside the functions only (the core never imports it at module
level). Figures are :class:`matplotlib.figure.Figure` objects, not pyplot, so no global
state or GUI backend is touched and a figure is freed once saved. The statistics come
precomputed from :mod:`castillo_report.data`, so drawing never walks the raw rows; many
small marks (boxes, whiskers, per-prompt ranges) are drawn as one collection per panel,
not one artist each. Which figures a report gets is
:mod:`castillo_report.figures`' choice.

Axes numbers are placed here, not by matplotlib's locators: every panel shows its own
(shared axes would hide them on inner panels), log axes get 1-2-5 or plain ticks that
always land inside the data's range (a range within one decade still gets numbers), and
they are written as plain text (``1,000``, ``15k``, ``0.5%``), since mathtext is off for
labels that come from the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from castillo_report.data import BoxStats, Strip
from castillo_report.labels import clean, tick

DPI = 90
BOX_COLOUR = "#9ecae1"
ORIGINAL = "#4c72b0"
SANITIZED = "#dd8452"


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=DPI)


def margins(
    fig: Any, left: float, right: float, top: float, bottom: float, wspace: float = 0.2, hspace: float = 0.2
) -> None:
    """Margins in inches (a layout engine would measure every tick label: seconds per figure)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=min(left / width, 0.6),
        right=1 - right / width,
        top=1 - top / height,
        bottom=min(bottom / height, 0.6),
        wspace=wspace,
        hspace=hspace,
    )


def label_inches(labels: Sequence[str], fontsize: float) -> float:
    """About how wide the longest label is, in inches (0.62 em per character, DejaVu Sans)."""
    longest = max((len(label) for label in labels), default=0)
    return 0.25 + longest * fontsize * 0.62 / 72


Drawn = tuple[int, int, list[dict[str, Any]]]
"""What drawing a figure gives back: its width and height in pixels, and what each panel shows."""


def _shown(axis: Any) -> list[str]:
    """The tick labels an axis shows (either side), in order."""
    labels = []
    for tick_ in axis.get_major_ticks():
        for label in (tick_.label1, tick_.label2):
            if label.get_visible() and label.get_text():
                labels.append(label.get_text())
    return labels


def panels(fig: Any) -> list[dict[str, Any]]:
    """Per visible panel of a drawn figure: its title, the numbers or names on its axes, the values written in it."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out.append(
            {
                "title": "colour bar" if hasattr(ax, "_colorbar") else ax.get_title(),
                "x": _shown(ax.xaxis),
                "y": _shown(ax.yaxis),
                "values": [t.get_text() for t in ax.texts],
            }
        )
    return out


def save(fig: Any, path: Path) -> Drawn:
    fig.savefig(path, dpi=DPI)
    width, height = fig.canvas.get_width_height()
    return int(width), int(height), panels(fig)


# -- axes numbers ---------------------------------------------------------------------


def nice_ticks(low: float, high: float, log: bool, most: int = 6, integer: bool = False) -> list[float]:
    """Tick positions inside ``[low, high]``: 1-2-5 steps (decades first) on a log axis, else round steps."""
    from matplotlib.ticker import MaxNLocator

    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
            ticks = [m * 10.0**e for e in range(first, last + 1) for m in mantissas]
            ticks = [t for t in ticks if low <= t <= high]
            if len(ticks) >= 3 and (len(mantissas) < 9 or len(ticks) <= most):
                step = math.ceil(len(ticks) / most)
                return ticks[::step]
    locator = MaxNLocator(nbins=min(most, 5), steps=[1, 2, 2.5, 5, 10], integer=integer)
    ticks = [float(t) for t in locator.tick_values(low, high) if low <= t <= high and (t > 0 or not log)]
    return ticks


def set_axis(
    ax: Any,
    name: str,
    low: float,
    high: float,
    log: bool,
    formatter: Callable[[float], str] = tick,
    pad: bool = True,
    integer: bool = False,
) -> None:
    """Limits, ticks and plain-text numbers of one axis (``x`` or ``y``), shown on this panel whatever is shared.

    ``pad`` widens the limits by a few percent so the extreme points are not cut; without,
    the axis starts exactly at ``low`` (a bar or a count from 0) and ends a little above ``high``.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    axis = getattr(ax, f"{name}axis")
    if log:
        getattr(ax, f"set_{name}scale")("log")
        low, high = max(low, 0.5), max(high, max(low, 0.5) * 1.5)
        span = (high / low) ** 0.04
        low, high = low / span, high * span
    else:
        high = high if high > low else low + 1.0
        margin = (high - low) * (0.04 if pad else 0.08)
        low, high = (low - margin if pad else low), high + margin
    getattr(ax, f"set_{name}lim")(low, high)
    ticks = nice_ticks(low, high, log, integer=integer)
    if len({formatter(t) for t in ticks}) < len(ticks):  # the format cannot tell them apart (0.5 as tokens)
        formatter = tick
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: formatter(value)))
    ax.tick_params(axis=name, labelsize=7, **{"labelbottom" if name == "x" else "labelleft": True})


def _finite_range(arrays: Sequence[np.ndarray], positive: bool = False) -> tuple[float, float]:
    low, high = math.inf, -math.inf
    for values in arrays:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values) & ((values > 0) if positive else True)]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if not math.isfinite(low):
        return (1.0, 10.0) if positive else (0.0, 1.0)
    return low, high


# -- heatmaps -------------------------------------------------------------------------


def _colour_ticks(vmax: float, fmt: Callable[[float | None], str], kind: str) -> tuple[list[float], list[str]]:
    """Colour bar ticks from 0 to ``vmax`` with the cells' own format (plain numbers if it cannot tell them apart)."""
    from matplotlib.ticker import MaxNLocator

    locator = MaxNLocator(nbins=5, steps=[1, 2, 5, 10], integer=kind == "tokens" and vmax >= 5)
    ticks = [float(t) for t in locator.tick_values(0, vmax) if -1e-12 <= t <= vmax * (1 + 1e-9)]
    labels = [fmt(t) for t in ticks]
    if len(set(labels)) < len(labels):
        labels = [tick(t) for t in ticks]
    return ticks, labels


def _heat_panel(
    fig: Any,
    ax: Any,
    matrix: np.ndarray,
    ylabels: list[str] | None,
    xlabels: list[str],
    fmt: Callable[[float | None], str],
    vmax: float,
    title: str,
) -> Any:
    import matplotlib as mpl

    rows, cols = matrix.shape
    cmap = mpl.colormaps["viridis"].with_extremes(bad="#e8e8e8")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, aspect="auto", vmin=0.0, vmax=vmax)
    ax.set_xticks(range(cols), xlabels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(rows), ylabels if ylabels is not None else [""] * rows, fontsize=8)
    ax.set_title(title, fontsize=10)
    if cols * rows <= 600:
        size = 7 if cols * rows <= 200 else 5
        for r in range(rows):
            for c in range(cols):
                value = matrix[r, c]
                if not np.isfinite(value):
                    ax.text(c, r, "–", ha="center", va="center", fontsize=size, color="#777777")
                    continue
                light = value / vmax > 0.55
                colour = "black" if light else "white"
                ax.text(c, r, fmt(value), ha="center", va="center", fontsize=size, color=colour)
    return image


def heat_scale(matrices: Sequence[np.ndarray], kind: str) -> float:
    """The top of a colour scale that starts at 0 (rates: at least 1%, so 0.0% cells are not all hot)."""
    finite = [m[np.isfinite(m)] for m in matrices]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    return max(top, 0.01) if kind == "percent" else (top if top > 0 else 1.0)


def heatmap(
    panels: Sequence[tuple[str, np.ndarray]],
    models: list[str],
    datasets: list[str],
    fmt: Callable[[float | None], str],
    kind: str,
    path: Path,
) -> Drawn:
    """Model x dataset heatmaps side by side on one colour scale, each cell's value written in it."""
    rows, cols = panels[0][1].shape
    ylabels = [clean(m, 40) for m in models]
    xlabels = [clean(d, 18) for d in datasets]
    left = label_inches(ylabels, 8)
    bottom = 0.35 + label_inches(xlabels, 8) * 0.55
    panel = max(3.0, 0.95 * cols)
    width = left + panel * len(panels) + 0.35 * (len(panels) - 1) + 1.3
    height = 0.6 + bottom + max(1.2, 0.32 * rows)
    fig = new_figure(width, height)
    margins(fig, left, 1.3, 0.45, bottom, wspace=0.35 / panel)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    vmax = heat_scale([m for _, m in panels], kind)
    image = None
    for index, (title, matrix) in enumerate(panels):
        image = _heat_panel(fig, axes[index], matrix, ylabels if index == 0 else None, xlabels, fmt, vmax, title)
    cax = fig.add_axes((1 - 1.05 / width, bottom / height, 0.18 / width, 1 - (bottom + 0.45) / height))
    bar = fig.colorbar(image, cax=cax)
    ticks, labels = _colour_ticks(vmax, fmt, kind)
    bar.set_ticks(ticks, labels=labels)
    cax.tick_params(labelsize=7)
    return save(fig, path)


# -- bars (one model or one dataset) -------------------------------------------------------


def bars(
    panels: Sequence[tuple[str, list[np.ndarray], Callable[[float | None], str]]],
    categories: list[str],
    series: list[str],
    path: Path,
) -> Drawn:
    """One panel per quantity, a horizontal bar per category (and per series: original, sanitized)."""
    from matplotlib.patches import Patch

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    labels = [clean(c, 36) for c in categories]
    left = label_inches(labels, 7)
    panel_width, panel_height = 2.9, 0.45 + 0.24 * len(categories) * max(1, len(series) * 0.7)
    legend = 0.3 if len(series) > 1 else 0.0
    width = left + panel_width * ncols + 0.25 * (ncols - 1) + 0.3
    fig = new_figure(width, (panel_height + 0.6) * nrows + 0.2 + legend)
    margins(fig, left, 0.3, 0.35 + legend, 0.4, wspace=0.25 / panel_width, hspace=0.6 / panel_height)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    colours = [ORIGINAL, SANITIZED][: len(series)]
    for index, (title, values, fmt) in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        top = 0.0
        height = 0.8 / len(values)
        for s, row in enumerate(values):
            where = np.arange(len(categories)) - 0.4 + height * (s + 0.5)
            shown = np.nan_to_num(row, nan=0.0)
            ax.barh(where, shown, height=height * 0.9, color=colours[s % len(colours)])
            top = max(top, float(np.nanmax(row)) if np.isfinite(row).any() else 0.0)
            for k, value in enumerate(row):
                ax.text(shown[k], where[k], " " + fmt(value), va="center", fontsize=6)
        top = top or (0.01 if fmt(0.5).endswith("%") else 1.0)
        set_axis(ax, "x", 0.0, top * 1.2, False, fmt, pad=False)  # room for the values written after the bars
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(len(categories)), labels, fontsize=7)
        ax.set_ylim(len(categories) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
    for index in range(len(panels), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    if len(series) > 1:
        handles = [Patch(color=colours[i], label=name) for i, name in enumerate(series)]
        fig.legend(handles=handles, loc="upper center", ncols=len(series), fontsize=8, frameon=False)
    return save(fig, path)


# -- box plots ----------------------------------------------------------------------------


def _draw_boxes(ax: Any, boxes: Sequence[tuple[float, BoxStats]], log: bool) -> None:
    """Horizontal boxes at the given y positions, as a few collections (``Axes.bxp`` makes seven
    artists per box: a second per figure at CASTILLO's 91 cells)."""
    from matplotlib.collections import LineCollection, PolyCollection

    if not boxes:
        return
    floor = 1.0 if log else -math.inf  # a log axis cannot show 0: lengths of 0 tokens sit at 1

    def at(value: float) -> float:
        return max(float(value), floor)

    half, cap = 0.3, 0.15
    rects, whiskers, medians = [], [], []
    for y, b in boxes:
        q1, q3 = at(b.q1), at(b.q3)
        rects.append([(q1, y - half), (q3, y - half), (q3, y + half), (q1, y + half)])
        lo, hi = at(b.whislo), at(b.whishi)
        whiskers += [
            [(lo, y), (q1, y)],
            [(q3, y), (hi, y)],
            [(lo, y - cap), (lo, y + cap)],
            [(hi, y - cap), (hi, y + cap)],
        ]
        medians.append([(at(b.med), y - half), (at(b.med), y + half)])
    ax.add_collection(PolyCollection(rects, facecolors=BOX_COLOUR, edgecolors="black", linewidths=0.8), autolim=False)
    ax.add_collection(LineCollection(whiskers, colors="black", linewidths=0.8), autolim=False)
    ax.add_collection(LineCollection(medians, colors="#ff7f0e", linewidths=1.2), autolim=False)
    ys = [y for y, _ in boxes]
    ax.scatter([at(b.mean) for _, b in boxes], ys, marker="^", s=28, color="#2ca02c", zorder=3, linewidths=0)
    ax.scatter([at(b.maximum) for _, b in boxes], ys, s=22, facecolors="none", edgecolors="black", zorder=3)


def boxes(
    panels: Sequence[tuple[str, list[tuple[str, BoxStats | None]]]],
    xlabel: str,
    log: bool,
    path: Path,
) -> Drawn:
    """One panel per group, one horizontal box per row (quartiles, p1-p99 whiskers, mean triangle, max dot)."""
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    rows = max(len(r) for _, r in panels)
    labels = [clean(name, 36) for _, r in panels for name, _ in r]
    left = label_inches(labels, 7)
    panel_width, panel_height = 3.6, 0.55 + 0.2 * rows
    fig = new_figure(left + panel_width * ncols + 0.3 * (ncols - 1) + 0.2, (panel_height + 0.7) * nrows + 0.2)
    margins(fig, left, 0.2, 0.35, 0.45, wspace=0.08, hspace=0.7 / panel_height)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    every = [b for _, r in panels for _, b in r if b is not None]
    low = min((b.whislo for b in every), default=0.0)
    high = max((max(b.maximum, b.whishi) for b in every), default=1.0)
    if log:
        low, high = max(low, 1.0), max(high, 1.0)
    for index, (title, members) in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        ax.set_title(clean(title, 60), fontsize=9)
        _draw_boxes(ax, [(float(p), b) for p, (_n, b) in enumerate(members, start=1) if b is not None], log)
        ax.set_yticks(range(1, len(members) + 1), [clean(n, 36) for n, _ in members], fontsize=7)
        ax.set_ylim(rows + 0.6, 0.4)
        set_axis(ax, "x", low, high, log)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(xlabel, fontsize=8)
    for index in range(len(panels), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    return save(fig, path)


# -- per-prompt lengths ------------------------------------------------------------------


def strips(
    panels: Sequence[tuple[str, list[tuple[str, list[Strip]]]]],
    label_prompts: bool,
    path: Path,
) -> Drawn:
    """Each chosen prompt's N response lengths as a row of dots (log x), grouped by model, one panel per dataset.

    A bar spans the prompt's shortest to longest response and a tick marks its mean: how far
    N answers to one prompt lie apart, the thing a mean hides.
    """
    from matplotlib.collections import LineCollection

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    rows = max(sum(max(len(s), 1) for _, s in groups) for _, groups in panels)
    names = [clean(name, 36) for _, groups in panels for name, _ in groups]
    if label_prompts:
        names = ["prompt 0123456789"]
    left = label_inches(names, 7)
    panel_width, panel_height = 3.8, 0.5 + 0.11 * rows
    gap = left + 0.3  # every panel has its own row labels
    fig = new_figure(left + panel_width * ncols + gap * (ncols - 1) + 0.2, (panel_height + 0.7) * nrows + 0.2)
    margins(fig, left, 0.2, 0.35, 0.45, wspace=gap / panel_width, hspace=0.7 / panel_height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    low, high = _finite_range([s.lengths for _, g in panels for _, ss in g for s in ss], positive=True)
    for index, (title, groups) in enumerate(panels):
        ax = axes[index // ncols][index % ncols]
        ax.set_title(clean(title, 60), fontsize=9)
        y = 0
        xs, ys, ticks, tick_labels, spans = [], [], [], [], []
        for g, (name, members) in enumerate(groups):
            start = y
            for strip in sorted(members, key=lambda s: float(np.median(s.lengths)) if s.lengths.size else 0.0):
                lengths = np.maximum(np.asarray(strip.lengths, dtype=np.float64), 1.0)
                xs.append(lengths)
                ys.append(np.full(lengths.size, y, dtype=np.float64))
                if lengths.size:
                    spans.append((y, float(lengths.min()), float(lengths.max()), float(lengths.mean())))
                if label_prompts:
                    ticks.append(y)
                    tick_labels.append(f"prompt {clean(strip.prompt_id, 10)}")
                y += 1
            if not label_prompts:
                ticks.append((start + y - 1) / 2 if y > start else start)
                tick_labels.append(clean(name, 36))
            if g < len(groups) - 1:
                ax.axhline(y - 0.5, color="#cccccc", linewidth=0.6)
            y = max(y, start + 1)
        if spans:
            ranges = [[(lo, row), (hi, row)] for row, lo, hi, _ in spans]
            means = [[(mean, row - 0.35), (mean, row + 0.35)] for row, _, _, mean in spans]
            ax.add_collection(LineCollection(ranges, colors="#bbbbbb", linewidths=1.0, zorder=1), autolim=False)
            ax.add_collection(LineCollection(means, colors="#d62728", linewidths=1.2, zorder=3), autolim=False)
        if xs:
            ax.scatter(np.concatenate(xs), np.concatenate(ys), s=9, color=ORIGINAL, alpha=0.6, linewidths=0, zorder=2)
        ax.set_yticks(ticks, tick_labels, fontsize=7 if label_prompts or len(groups) < 20 else 6)
        ax.set_ylim(max(y, 1) - 0.5, -0.5)
        set_axis(ax, "x", low, high, True)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("output tokens (log)", fontsize=8)
    for index in range(len(panels), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    return save(fig, path)


# -- one cell: histograms ------------------------------------------------------------------


def histograms(
    lengths: np.ndarray, sanitized: np.ndarray | None, cvs: np.ndarray, cap: int | None, path: Path
) -> Drawn:
    """Every response's length (original and sanitized) and every prompt's CV, as histograms."""
    from matplotlib.lines import Line2D

    fig = new_figure(9.0, 3.4)
    margins(fig, 0.7, 0.2, 0.35, 0.55, wspace=0.25)
    left, right = fig.subplots(1, 2, squeeze=True)
    values = np.asarray(lengths, dtype=np.float64)
    top = float(max(values.max() if values.size else 1.0, 1.0))
    edges = np.linspace(0.0, top, 31)
    counts, _ = np.histogram(values, bins=edges)
    left.stairs(counts, edges, fill=True, color=ORIGINAL, alpha=0.55)
    handles = [Line2D([], [], color=ORIGINAL, linewidth=6, alpha=0.55, label=f"original ({values.size:,})")]
    peak = float(counts.max()) if counts.size else 1.0
    if sanitized is not None:
        kept, _ = np.histogram(np.asarray(sanitized, dtype=np.float64), bins=edges)
        left.stairs(kept, edges, color=SANITIZED, linewidth=1.6)
        handles.append(Line2D([], [], color=SANITIZED, linewidth=1.6, label=f"sanitized ({len(sanitized):,})"))
        peak = max(peak, float(kept.max()) if kept.size else 0.0)
    if values.size:
        left.axvline(float(values.mean()), color="#d62728", linewidth=1.0)
        handles.append(Line2D([], [], color="#d62728", linewidth=1.0, label=f"mean {values.mean():,.1f}"))
    if cap is not None and cap <= top * 1.05:
        left.axvline(cap, color="#555555", linewidth=1.0, linestyle="--")
        handles.append(Line2D([], [], color="#555555", linestyle="--", label=f"cap {cap:,}"))
    set_axis(left, "x", 0.0, top, False)
    set_axis(left, "y", 0.0, max(peak, 1.0), False, pad=False, integer=True)
    left.set_xlabel("output tokens", fontsize=8)
    left.set_ylabel("responses", fontsize=8)
    left.set_title("Response lengths", fontsize=9)
    left.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
    cv = np.asarray(cvs, dtype=np.float64)
    cv = cv[np.isfinite(cv)]
    high = float(max(cv.max() if cv.size else 1.0, 1e-3))
    edges = np.linspace(0.0, high, 21)
    counts, _ = np.histogram(cv, bins=edges)
    right.stairs(counts, edges, fill=True, color=ORIGINAL, alpha=0.55)
    set_axis(right, "x", 0.0, high, False)
    set_axis(right, "y", 0.0, max(float(counts.max()) if counts.size else 1.0, 1.0), False, pad=False, integer=True)
    right.set_xlabel("coefficient of variation (std / mean of a prompt's N lengths)", fontsize=8)
    right.set_ylabel("prompts", fontsize=8)
    right.set_title("Per-prompt coefficient of variation", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save(fig, path)


# -- scatter -------------------------------------------------------------------------------


def scatter(
    points: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    models: list[str],
    labels: dict[str, str],
    datasets: list[str],
    path: Path,
) -> Drawn:
    """One panel per model: input size against mean output length, a colour per dataset (log-log)."""
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    ncols = max(1, min(4, len(models)))
    nrows = math.ceil(len(models) / ncols)
    legend_rows = math.ceil(len(datasets) / 6)
    top = 0.35 + 0.22 * legend_rows
    fig = new_figure(0.75 + 3.2 * ncols, top + 0.55 + 2.7 * nrows)
    margins(fig, 0.75, 0.15, top, 0.55, wspace=0.55 / 3.2 * 1.6, hspace=0.45)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    palette = mpl.colormaps["tab10" if len(datasets) <= 10 else "tab20"]
    colours = {d: palette(i % palette.N) for i, d in enumerate(datasets)}
    clipped = {
        key: (np.maximum(np.nan_to_num(x, nan=1.0), 1.0), np.maximum(np.nan_to_num(y, nan=1.0), 1.0))
        for key, (x, y) in points.items()
    }
    xlow, xhigh = _finite_range([x for x, _ in clipped.values()], positive=True)
    ylow, yhigh = _finite_range([y for _, y in clipped.values()], positive=True)
    for index, model in enumerate(models):
        ax = axes[index // ncols][index % ncols]
        drawn = sum(clipped[(model, d)][0].size for d in datasets if (model, d) in clipped)
        size = float(np.clip(6000 / max(drawn, 1), 3, 16))  # few points: bigger dots
        xs, ys, cs = [], [], []
        for dataset in datasets:  # one collection per panel, a colour per point (not one artist per dataset)
            xy = clipped.get((model, dataset))
            if xy is None or xy[0].size == 0:
                continue
            xs.append(xy[0])
            ys.append(xy[1])
            cs.append(np.broadcast_to(np.asarray(colours[dataset]), (xy[0].size, 4)))
        if xs:
            ax.scatter(np.concatenate(xs), np.concatenate(ys), s=size, alpha=0.5, c=np.concatenate(cs), linewidths=0)
        ax.set_title(clean(labels.get(model, model), 40), fontsize=8)
        set_axis(ax, "x", xlow, xhigh, True)
        set_axis(ax, "y", ylow, yhigh, True)
        ax.grid(alpha=0.3)
        ax.set_ylabel("mean output (tokens)", fontsize=8)
        ax.set_xlabel("input size (tokens)", fontsize=8)
    for index in range(len(models), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[d], label=clean(d, 40)) for d in datasets]
    fig.legend(handles=handles, loc="upper center", ncols=min(len(datasets), 6), fontsize=8, frameon=False)
    return save(fig, path)
