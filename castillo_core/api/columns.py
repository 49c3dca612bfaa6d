"""What a metric's columns mean: type, role and detector, declared once and stored with the data.

A metric declares each column it adds as a :class:`Column`. Besides its Arrow type, a
column has a *role* that readers (the report, the views, the exports) go by instead of
its name:

- ``measure``: any per-response or per-prompt value (the default);
- ``count``: a count of something in the text (characters, words, lines);
- ``score``: a continuous score (of a ``detector`` when it belongs to one);
- ``flag``: a detector's per-response verdict "this response is degenerate" (bool);
- ``flag_count``: a detector's per-prompt number of flagged responses (int64).

``flag`` and ``flag_count`` columns are named by rule, here and nowhere else
(:func:`flag_column`, :func:`flag_count_column`), so a dataset is readable without the
metric installed. The declarations travel with the data: :func:`field_metadata` puts
them into the Arrow field metadata of every part, :func:`declared_columns` reads them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

ColumnType = Literal["int64", "float64", "bool", "string", "list<int64>", "list<float64>", "list<bool>"]
ColumnRole = Literal["measure", "count", "score", "flag", "flag_count"]
ROLES: tuple[str, ...] = ("measure", "count", "score", "flag", "flag_count")

_ROLE_KEY = b"castillo.role"
_DETECTOR_KEY = b"castillo.detector"
_DESCRIPTION_KEY = b"description"


@dataclass(frozen=True)
class Column:
    """A column a metric adds: its name, Arrow type, meaning and role (see the module docstring)."""

    name: str
    type: ColumnType
    description: str = ""
    role: ColumnRole = "measure"
    detector: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"column {self.name!r}: unknown role {self.role!r} (roles: {', '.join(ROLES)})")
        if self.role in {"flag", "flag_count"} and not self.detector:
            raise ValueError(f"column {self.name!r}: a {self.role} column needs its detector's name")

    @classmethod
    def flag(cls, detector: str, description: str = "") -> Column:
        """A detector's per-response flag, named by the rule (``degenerate_<detector>``)."""
        return cls(flag_column(detector), "bool", description, role="flag", detector=detector)

    @classmethod
    def flag_count(cls, detector: str, description: str = "") -> Column:
        """A detector's per-prompt count of flagged responses (``n_degenerate_<detector>``)."""
        return cls(flag_count_column(detector), "int64", description, role="flag_count", detector=detector)


def _slug(detector: str) -> str:
    return detector.replace("-", "_")


def flag_column(detector: str) -> str:
    """The name of detector ``detector``'s per-response flag column (``v1-length`` -> ``degenerate_v1_length``)."""
    return f"degenerate_{_slug(detector)}"


def flag_count_column(detector: str) -> str:
    """The name of detector ``detector``'s per-prompt flag-count column."""
    return f"n_{flag_column(detector)}"


def field_metadata(column: Column) -> dict[bytes, bytes]:
    """The Arrow field metadata that carries a column's declaration into every part."""
    meta = {_ROLE_KEY: column.role.encode()}
    if column.description:
        meta[_DESCRIPTION_KEY] = column.description.encode()
    if column.detector:
        meta[_DETECTOR_KEY] = column.detector.encode()
    return meta


def declared_columns(fields: Iterable[Any]) -> list[Column]:
    """The metric columns declared in an Arrow schema's fields (those carrying a role)."""
    out = []
    for f in fields:
        meta = f.metadata or {}
        role = meta.get(_ROLE_KEY)
        if role is None:
            continue
        detector = meta.get(_DETECTOR_KEY)
        out.append(
            Column(
                f.name,
                _type_name(f.type),
                meta.get(_DESCRIPTION_KEY, b"").decode(),
                role=cast(ColumnRole, role.decode()),  # validated by Column.__post_init__
                detector=detector.decode() if detector else None,
            )
        )
    return out


def detectors(fields: Iterable[Any], role: ColumnRole = "flag_count") -> dict[str, str]:
    """Detector name -> column name, for the columns of ``role`` declared in a schema."""
    return {c.detector: c.name for c in declared_columns(fields) if c.role == role and c.detector}


def _type_name(arrow_type: Any) -> ColumnType:
    text = str(arrow_type)
    names: dict[str, ColumnType] = {
        "int64": "int64",
        "double": "float64",
        "bool": "bool",
        "string": "string",
        "list<item: int64>": "list<int64>",
        "list<item: double>": "list<float64>",
        "list<item: bool>": "list<bool>",
    }
    return names.get(text, "string")
