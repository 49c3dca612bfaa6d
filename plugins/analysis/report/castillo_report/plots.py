"""The report's figures, drawn with matplotlib's Agg canvas into PNG files.

matplotlib is imported inside :func:`draw_all` only (the core never imports it at module
level). Figures are :class:`matplotlib.figure.Figure` objects, not pyplot, so no global
state or GUI backend is touched and memory is freed as soon as a figure is saved. The
statistics come precomputed from :mod:`castillo_report.data` (box plots through
``Axes.bxp``), so drawing never walks the raw rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from castillo_views.names import file_part

from castillo_core import CastilloError
from castillo_report.data import BoxStats, ReportData

DPI = 90
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Figure:
    """A PNG written next to the page, with the words that go around it."""

    file: str
    title: str
    caption: str
    width: int = 0
    height: int = 0


HEATMAPS: tuple[tuple[str, str, str, str], ...] = (
    ("mean_length", "Mean response length (tokens)", "{:,.0f}", "mean of the prompts' output_mean"),
    ("mean_std", "Mean intra-prompt standard deviation (tokens)", "{:,.0f}", "mean of the prompts' output_std"),
    (
        "mean_cv",
        "Mean coefficient of variation",
        "{:.2f}",
        "mean over prompts of output_std / output_mean: how much N answers to one prompt differ",
    ),
    ("share_capped", "Share of responses that hit the cap", "{:.1%}", "responses cut by max_new_tokens / responses"),
)


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=DPI)


def _margins(
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


def _label_inches(labels: list[str], fontsize: float) -> float:
    """About how wide the longest label is, in inches (0.62 em per character, DejaVu Sans)."""
    longest = max((len(label) for label in labels), default=0)
    return 0.25 + longest * fontsize * 0.62 / 72


def _log_scale(ax: Any, axes: str) -> None:
    """Log scale with major ticks only: minor log ticks cost more to lay out than the data."""
    from matplotlib.ticker import LogLocator, NullLocator

    for name in axes:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        axis.set_major_locator(LogLocator(base=10, numticks=6))
        axis.set_minor_locator(NullLocator())


def _save(fig: Any, path: Path) -> tuple[int, int]:
    fig.savefig(path, dpi=DPI)
    width, height = fig.canvas.get_width_height()
    fig.clear()
    return int(width), int(height)


def _short(name: str, limit: int = 40) -> str:
    """A label from the data: control characters (no glyph, no line breaks) as "?", at most ``limit`` characters."""
    name = _CONTROL.sub("?", name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def heatmap(
    matrix: np.ndarray, models: list[str], datasets: list[str], title: str, fmt: str, path: Path
) -> tuple[int, int]:
    """A model x dataset heatmap with each cell's value written in it; grey where no data."""
    import matplotlib as mpl

    rows, cols = matrix.shape
    ylabels = [_short(m) for m in models]
    xlabels = [_short(d, 18) for d in datasets]
    left = _label_inches(ylabels, 8)
    bottom = 0.35 + _label_inches(xlabels, 8) * 0.55
    width = left + max(3.0, 0.95 * cols) + 1.2
    height = 0.6 + bottom + max(1.2, 0.32 * rows)
    fig = _new_figure(width, height)
    _margins(fig, left, 1.2, 0.45, bottom)
    ax = fig.add_subplot()
    cmap = mpl.colormaps["viridis"].with_extremes(bad="#e8e8e8")
    finite = matrix[np.isfinite(matrix)]
    vmin = 0.0  # every quantity here is >= 0: a scale from 0 does not exaggerate small differences
    vmax = max(float(finite.max()) if finite.size else 0.0, 1e-12)
    if fmt.endswith("%}"):
        vmax = max(vmax, 0.01)  # rates: a scale of at least 0..1% so 0.0% cells are not all "hot"
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(cols), xlabels, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(rows), ylabels, fontsize=8)
    ax.set_title(title, fontsize=10)
    if cols * rows <= 600:
        size = 7 if cols * rows <= 200 else 5
        for r in range(rows):
            for c in range(cols):
                value = matrix[r, c]
                if not np.isfinite(value):
                    ax.text(c, r, "–", ha="center", va="center", fontsize=size, color="#777777")
                    continue
                light = (value - vmin) / (vmax - vmin) > 0.55
                text = fmt.format(value)
                ax.text(c, r, text, ha="center", va="center", fontsize=size, color="black" if light else "white")
    cax = fig.add_axes((1 - 1.0 / width, bottom / height, 0.18 / width, 1 - (bottom + 0.45) / height))
    fig.colorbar(image, cax=cax)
    cax.tick_params(labelsize=7)
    return _save(fig, path)


def _grid(count: int, columns: int) -> tuple[int, int]:
    ncols = max(1, min(columns, count))
    return ncols, max(1, math.ceil(count / ncols))


def boxes(
    stats: dict[tuple[str, str], BoxStats],
    models: list[str],
    datasets: list[str],
    xlabel: str,
    log: bool,
    path: Path,
) -> tuple[int, int]:
    """One panel per dataset, one horizontal box per model (quartiles, p1-p99 whiskers, max dot)."""
    ncols, nrows = _grid(len(datasets), 3)
    labels = [_short(m, 36) for m in models]
    left = _label_inches(labels, 7)
    panel_width, panel_height = 3.6, 0.55 + 0.2 * len(models)
    fig = _new_figure(left + panel_width * ncols + 0.3 * (ncols - 1) + 0.2, (panel_height + 0.55) * nrows + 0.2)
    _margins(fig, left, 0.2, 0.35, 0.45, wspace=0.08, hspace=0.55 / panel_height)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True, sharex=log)
    positions = {m: i + 1 for i, m in enumerate(models)}
    kwargs: dict[str, Any] = {"showmeans": True, "showfliers": True, "patch_artist": True, "widths": 0.6}
    for index, dataset in enumerate(datasets):
        ax = axes[index // ncols][index % ncols]
        ax.set_title(_short(dataset, 60), fontsize=9)
        present = [(m, stats[(m, dataset)]) for m in models if (m, dataset) in stats]
        if present:
            records = []
            for _model, box in present:
                record = box.bxp()
                if log:  # a log axis cannot show 0: lengths of 0 tokens sit at 1
                    record = {k: (max(v, 1.0) if isinstance(v, float) else v) for k, v in record.items()}
                    record["fliers"] = [max(f, 1.0) for f in record["fliers"]]
                records.append(record)
            where = [positions[m] for m, _ in present]
            try:
                artists = ax.bxp(records, positions=where, orientation="horizontal", **kwargs)
            except TypeError:  # matplotlib < 3.10
                artists = ax.bxp(records, positions=where, vert=False, **kwargs)
            for patch in artists["boxes"]:
                patch.set_facecolor("#9ecae1")
        ax.set_yticks(range(1, len(models) + 1), labels, fontsize=7)
        ax.set_ylim(len(models) + 0.6, 0.4)
        if log:
            _log_scale(ax, "x")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        if index // ncols == nrows - 1 or index + ncols >= len(datasets):
            ax.set_xlabel(xlabel, fontsize=8)
    for index in range(len(datasets), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    return _save(fig, path)


def scatter(
    points: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    models: list[str],
    datasets: list[str],
    path: Path,
) -> tuple[int, int]:
    """One panel per model: input size against mean output length, a colour per dataset (log-log)."""
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    ncols, nrows = _grid(len(models), 4)
    legend_rows = math.ceil(len(datasets) / 6)
    top = 0.35 + 0.22 * legend_rows
    fig = _new_figure(0.7 + 3.1 * ncols, top + 0.55 + 2.6 * nrows)
    _margins(fig, 0.7, 0.15, top, 0.55, wspace=0.12, hspace=0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    palette = mpl.colormaps["tab10" if len(datasets) <= 10 else "tab20"]
    colours = {d: palette(i % palette.N) for i, d in enumerate(datasets)}
    for index, model in enumerate(models):
        ax = axes[index // ncols][index % ncols]
        drawn = sum(points[(model, d)][0].size for d in datasets if (model, d) in points)
        size = float(np.clip(6000 / max(drawn, 1), 3, 16))  # few points: bigger dots
        for dataset in datasets:
            xy = points.get((model, dataset))
            if xy is None or xy[0].size == 0:
                continue
            x, y = np.maximum(np.nan_to_num(xy[0], nan=1.0), 1.0), np.maximum(np.nan_to_num(xy[1], nan=1.0), 1.0)
            ax.scatter(x, y, s=size, alpha=0.5, color=colours[dataset], linewidths=0)
        ax.set_title(_short(model, 40), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if index % ncols == 0:
            ax.set_ylabel("mean output (tokens)", fontsize=8)
        if index // ncols == nrows - 1 or index + ncols >= len(models):
            ax.set_xlabel("input size (tokens)", fontsize=8)
    _log_scale(axes[0][0], "xy")
    for index in range(len(models), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[d], label=_short(d, 40)) for d in datasets]
    fig.legend(handles=handles, loc="upper center", ncols=min(len(datasets), 6), fontsize=8, frameon=False)
    return _save(fig, path)


def require_matplotlib() -> None:
    """matplotlib importable, or a one-line :class:`CastilloError` that says what to install."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        if exc.name == "matplotlib":
            problem = "which is not installed here"
        else:  # installed but broken (a missing dependency, a binary built for another numpy)
            problem = f"which cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        raise CastilloError(
            f"castillo report draws its plots with matplotlib, {problem}: pip install matplotlib "
            '(or: pip install "castillo-report", which depends on it)'
        ) from None


def draw_all(data: ReportData, to: Path, step: Callable[[str], None]) -> list[Figure]:
    """Every figure of the report into ``to``; ``step`` is called before each one."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    figures: list[Figure] = []
    models, datasets = data.models, data.datasets
    jobs: list[tuple[str, str, str, Callable[[Path], tuple[int, int]]]] = []
    for key, title, fmt, caption in HEATMAPS:
        matrix = data.matrices[key]
        jobs.append((f"heatmap_{key}.png", title, caption, _bind_heatmap(matrix, models, datasets, title, fmt)))
    for name, source in data.degeneration_sources.items():
        key = f"degeneration_{name}"
        title = f"Degeneration rate ({_short(name, 60)})"
        caption = f"share of prompts flagged as degenerate by {name}: {source}"
        file = f"heatmap_degeneration_{file_part(name, 64)}.png"  # a detector's name comes from the data
        jobs.append((file, title, caption, _bind_heatmap(data.matrices[key], models, datasets, title, "{:.1%}")))
    jobs.append(
        (
            "lengths_box.png",
            "Response lengths per model and dataset",
            "every response's output tokens; box: quartiles, whiskers: p1 and p99, triangle: mean, dot: longest",
            lambda p: boxes(data.length_boxes, models, datasets, "output tokens (log)", True, p),
        )
    )
    jobs.append(
        (
            "cv_box.png",
            "Per-prompt coefficient of variation per model and dataset",
            "output_std / output_mean of each prompt; box: quartiles, whiskers: p1 and p99, triangle: mean, dot: max",
            lambda p: boxes(data.cv_boxes, models, datasets, "coefficient of variation", False, p),
        )
    )
    jobs.append(
        (
            "input_vs_output.png",
            "Input size against mean output length",
            "one dot per prompt (at most 2,000 per model x dataset, drawn at random with seed 0), log-log",
            lambda p: scatter(data.scatter, models, datasets, p),
        )
    )
    # Every label comes from the data: a model id like "$x^2$" or "a_b" is text, never mathtext or TeX.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        for file, title, caption, draw in jobs:
            step(f"plot {file}")
            width, height = draw(to / file)
            figures.append(Figure(file, title, caption, width, height))
    return figures


def _bind_heatmap(
    matrix: np.ndarray, models: list[str], datasets: list[str], title: str, fmt: str
) -> Callable[[Path], tuple[int, int]]:
    return lambda path: heatmap(matrix, models, datasets, title, fmt, path)
