"""Entry point of ``castillo-views``: adds ``castillo sanitize`` and the ``degenerate``/``sanitized`` views.

The views serve ``castillo_core.open_dataset(OUT).prompts(view="sanitized", detector=...)``;
their work (numpy, pyarrow) imports when a view is computed, not when castillo lists plugins.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from castillo_core import V1_DETECTOR, View, hookimpl, parse_options


class ViewOptions(BaseModel):
    """Options of both views: the detector that flags rows, and the cap for rows that record none."""

    model_config = ConfigDict(extra="forbid")

    detector: str = V1_DETECTOR
    cap: int | None = None


class _V1View(View):
    def compute(self, prompts: Any, responses: Any, **options: Any) -> tuple[Any, Any]:
        from castillo_views.views import compute_views

        opts = parse_options(ViewOptions, options, f"view {self.name}")
        views, _ = compute_views(prompts, responses, opts.detector, opts.cap)
        chosen = views[self.name]
        return chosen.prompts, chosen.responses


class DegenerateView(_V1View):
    name = "degenerate"
    description = "the rows a degeneration detector flags, unchanged (CASTILLO v1's 'degenerate' config)"


class SanitizedView(_V1View):
    name = "sanitized"
    description = "flagged samples removed and statistics recomputed (CASTILLO v1's 'sanitized' config)"


@hookimpl
def castillo_register_views(register: Any) -> None:
    register(DegenerateView)
    register(SanitizedView)


@hookimpl
def castillo_register_commands(cli: Any) -> None:
    from castillo_views.command import command

    cli.add_command(command)
