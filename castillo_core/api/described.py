"""What every plugin class shares: a description, libraries found missing without importing them, checked options."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from castillo_core.api.errors import ConfigError

_Options = TypeVar("_Options", bound=BaseModel)


def missing_requirements(requires: Sequence[str]) -> list[str]:
    """Import names in ``requires`` that are not installed, found without importing them."""
    missing = []
    for name in requires:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def parse_options(model: type[_Options], options: Mapping[str, Any], where: str) -> _Options:
    """Validate a plugin's free-form options with its pydantic model.

    ``where`` names the plugin ("backend llamacpp") so the error says whose option is
    wrong, e.g. ``backend llamacpp: option n_ctx: Input should be a valid integer``.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"option {'.'.join(str(p) for p in err['loc']) or '?'}: {err['msg']}" for err in exc.errors()
        )
        known = ", ".join(sorted(model.model_fields)) or "none"
        raise ConfigError(f"{where}: {problems} (known options: {known})") from None


class Described:
    """Class-level description shared by every kind of plugin."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    @classmethod
    def missing(cls) -> list[str]:
        """The libraries this plugin needs that are not installed (without importing them)."""
        return missing_requirements(cls.requires)
