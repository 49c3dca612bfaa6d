"""Which figures a report gets, by the shape of its grid, and drawing them.

- **grid** (two or more models and datasets): the CASTILLO paper's model x dataset
  heatmaps (mean length, original and sanitized side by side; mean std, mean CV, capped
  share, one per degeneration detector), then the distributions.
- **line** (one model or one dataset): a heatmap one cell wide says little, so the same
  numbers are bars by dataset (or by model), original and sanitized side by side.
- **single** (one model x one dataset): no heatmap at all; histograms of every response's
  length (original and sanitized) and of the per-prompt CV, with the page's headline numbers.

Every shape gets the per-prompt lengths (each chosen prompt's N lengths as dots) and input
size against output length. The number of figures does not grow with the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castillo_core import V1_DETECTOR, CastilloError
from castillo_report import plots
from castillo_report.data import ReportData, strip_prompts
from castillo_report.labels import FORMATS, clean

SANITIZED_NAME = f"sanitized ({V1_DETECTOR})"


@dataclass(frozen=True)
class Figure:
    """A PNG written next to the page, with the words that go around it and the section it belongs in."""

    file: str
    title: str
    caption: str
    width: int = 0
    height: int = 0
    section: str = "distributions"
    panels: list[dict[str, Any]] = field(default_factory=list, compare=False)
    """Per panel: its title, the numbers (or names) on its x and y axes, the values written in it."""


@dataclass(frozen=True)
class Job:
    file: str
    title: str
    caption: str
    section: str
    draw: Callable[[Path], plots.Drawn]


HEATMAPS: tuple[tuple[str, str, str, str], ...] = (
    ("mean_length", "Mean response length (tokens)", "tokens", "mean of the prompts' output_mean"),
    ("mean_std", "Mean intra-prompt standard deviation (tokens)", "tokens", "mean of the prompts' output_std"),
    (
        "mean_cv",
        "Mean coefficient of variation",
        "ratio",
        "mean over prompts of output_std / output_mean: how much N answers to one prompt differ",
    ),
    ("share_capped", "Share of responses that hit the cap", "percent", "responses cut by max_new_tokens / responses"),
)
BOX_CAPTION = "box: quartiles, whiskers: p1 and p99, triangle: mean, dot: {}"


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


def _degeneration(data: ReportData) -> list[tuple[str, str, str, str]]:
    """Per detector: matrix key, safe file part, title, caption."""
    from castillo_views.names import file_part

    out = []
    for name, source in data.degeneration_sources.items():
        out.append(
            (
                f"degeneration_{name}",
                file_part(name, 64),  # a detector's name comes from the data
                f"Degeneration rate ({clean(name, 60)})",
                f"share of prompts flagged as degenerate by {name}: {source}",
            )
        )
    return out


def _grid_jobs(data: ReportData) -> list[Job]:
    models = [data.labels.get(m, m) for m in data.models]
    jobs = []
    for key, title, kind, caption in HEATMAPS:
        panels = [(title, data.matrices[key])]
        if key == "mean_length" and data.sanitized:  # the answer at a glance, before and after sanitizing
            panels = [("original", data.matrices[key]), (SANITIZED_NAME, data.sanitized[key])]
            title = f"{title}, original and sanitized"
            caption = (
                f"{caption}, in the original rows and in the sanitized view (castillo sanitize: the samples v1's "
                f"length rule flags removed, statistics recomputed), on one colour scale; {data.sanitized_note}"
            )
        jobs.append(Job(f"heatmap_{key}.png", title, caption, "overview", _heat(panels, models, data, kind)))
    for key, part, title, caption in _degeneration(data):
        panels = [(title, data.matrices[key])]
        file = f"heatmap_degeneration_{part}.png"
        jobs.append(Job(file, title, caption, "overview", _heat(panels, models, data, "percent")))
    return jobs


def _heat(panels: list, models: list[str], data: ReportData, kind: str = "tokens") -> Callable[[Path], plots.Drawn]:
    return lambda path: plots.heatmap(panels, models, data.datasets, FORMATS[kind], kind, path)


def _line_jobs(data: ReportData) -> list[Job]:
    by_model = len(data.models) == 1  # one model: a bar per dataset; one dataset: a bar per model
    if by_model:
        categories = list(data.datasets)
        keys = [(data.models[0], d) for d in data.datasets]
    else:
        categories = [data.labels.get(m, m) for m in data.models]
        keys = [(m, data.datasets[0]) for m in data.models]
    index = {
        (data.models[m], data.datasets[d]): (m, d) for m in range(len(data.models)) for d in range(len(data.datasets))
    }

    def row(matrix: object) -> object:
        import numpy as np

        return np.array([matrix[index[k]] for k in keys], dtype=float)  # type: ignore[index]

    panels = []
    series = ["original", SANITIZED_NAME] if data.sanitized else ["original"]
    for key, title, kind, _caption in HEATMAPS:
        values = [row(data.matrices[key])]
        if data.sanitized:
            values.append(row(data.sanitized[key]))
        panels.append((title, values, FORMATS[kind]))
    for key, _part, title, _caption in _degeneration(data):
        panels.append((title, [row(data.matrices[key])], FORMATS["percent"]))
    what = "dataset" if by_model else "model"
    caption = (
        f"the heatmaps' numbers as bars, one per {what}"
        + (
            f"; orange: the sanitized view (castillo sanitize, v1's length rule): {data.sanitized_note}"
            if data.sanitized
            else ""
        )
        + "; degeneration: share of prompts a detector flags ("
        + "; ".join(f"{k}: {v}" for k, v in data.degeneration_sources.items())
        + ")"
    )
    title = f"Lengths, variation, capped share and degeneration by {what}"
    draw = lambda path: plots.bars(panels, categories, series, path)  # noqa: E731
    return [Job("overview_bars.png", title, caption, "overview", draw)]


def _box_panels(data: ReportData, stats: dict) -> list:
    if len(data.models) == 1 and len(data.datasets) > 1:
        model = data.models[0]
        return [(data.labels.get(model, model), [(d, stats.get((model, d))) for d in data.datasets])]
    return [(d, [(data.labels.get(m, m), stats.get((m, d))) for m in data.models]) for d in data.datasets]


def _strip_panels(data: ReportData) -> list:
    panels = []
    for dataset in data.datasets:
        groups = [
            (data.labels.get(m, m), data.strips[(m, dataset)]) for m in data.models if (m, dataset) in data.strips
        ]
        if groups:
            panels.append((dataset, groups))
    return panels


def _distribution_jobs(data: ReportData) -> list[Job]:
    jobs = []
    if data.shape == "single":
        key = (data.models[0], data.datasets[0])
        original, kept = data.lengths[key]
        cap = data.caps[0] if len(data.caps) == 1 else None
        caption = (
            "left: every response's output tokens"
            + (f" (outline: the sanitized view, v1's length rule: {data.sanitized_note})" if data.sanitized else "")
            + "; right: each prompt's coefficient of variation (std / mean of its N lengths)"
        )
        draw = lambda path: plots.histograms(original, kept if data.sanitized else None, data.cvs[key], cap, path)  # noqa: E731
        jobs.append(
            Job("lengths_hist.png", "Response lengths and per-prompt variation", caption, "distributions", draw)
        )
    else:
        panels = _box_panels(data, data.length_boxes)
        caption = "every response's output tokens; " + BOX_CAPTION.format("longest")
        draw = lambda path: plots.boxes(panels, "output tokens (log)", True, path)  # noqa: E731
        jobs.append(Job("lengths_box.png", "Response lengths per model and dataset", caption, "distributions", draw))
        cv_panels = _box_panels(data, data.cv_boxes)
        caption = "output_std / output_mean of each prompt; " + BOX_CAPTION.format("max")
        cv_draw = lambda path: plots.boxes(cv_panels, "coefficient of variation", False, path)  # noqa: E731
        title = "Per-prompt coefficient of variation per model and dataset"
        jobs.append(Job("cv_box.png", title, caption, "distributions", cv_draw))
    per_cell = strip_prompts(data.shape, len(data.models))
    strip_panels = _strip_panels(data)
    label_prompts = len(data.models) == 1
    caption = (
        f"the N response lengths of each prompt, one row per prompt: up to {per_cell} prompts per model and dataset, "
        "those whose N lengths spread widest (largest std), sorted by median; dots: the responses, grey bar: "
        "shortest to longest, red tick: the prompt's mean (log scale)"
    )
    draw = lambda path: plots.strips(strip_panels, label_prompts, path)  # noqa: E731
    jobs.append(Job("prompt_lengths.png", "Per-prompt length distributions", caption, "distributions", draw))
    caption = "one dot per prompt (at most 2,000 per model x dataset, drawn at random with seed 0), log-log"
    draw = lambda path: plots.scatter(data.scatter, data.models, data.labels, data.datasets, path)  # noqa: E731
    jobs.append(Job("input_vs_output.png", "Input size against mean output length", caption, "distributions", draw))
    return jobs


def plan(data: ReportData) -> list[Job]:
    """The figures of this report, in page order (see the module docstring)."""
    jobs = _grid_jobs(data) if data.shape == "grid" else _line_jobs(data) if data.shape == "line" else []
    return jobs + _distribution_jobs(data)


def draw_all(jobs: list[Job], to: Path, step: Callable[[str], None]) -> list[Figure]:
    """Draw ``jobs`` into ``to``; ``step`` is called before each one."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    figures: list[Figure] = []
    # Every label comes from the data: a model id like "$x^2$" or "a_b" is text, never mathtext or TeX.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        for job in jobs:
            step(f"plot {job.file}")
            width, height, shown = job.draw(to / job.file)
            figures.append(Figure(job.file, job.title, job.caption, width, height, job.section, shown))
    return figures
