"""The ledger: what was committed into an output, part by part, with row counts and checksums.

``OUT/parts.jsonl`` gets one line per committed part (both tables: path, rows, bytes,
sha256), appended between the responses' rename and the prompts' rename, which makes it the
commit point: a part is committed once its line is written, and a prompts file that no line
accounts for was never committed by castillo (a copy, a foreign file). Later lines for the
same part supersede earlier ones (a rescore rewrites a part); a ``removed`` line drops one
(``castillo verify --repair``). Appends are single small writes with ``O_APPEND``, so the many
writers of a cluster executor can share it; a torn last line (a crash mid-append) is ignored,
and its part, whose prompts never got renamed in, is then an orphan like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from castillo_core.api.errors import StoreError

LEDGER = "parts.jsonl"


@dataclass(frozen=True)
class FileRecord:
    """One committed file: where, how many rows, how many bytes, which content."""

    path: str  # relative to the output root
    rows: int
    size: int
    sha256: str

    @classmethod
    def of(cls, path: str, rows: int, data: bytes) -> FileRecord:
        return cls(path, rows, len(data), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class PartRecord:
    """A committed part: its prompts file and its responses file."""

    prompts: FileRecord
    responses: FileRecord
    config_hash: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "part": self.prompts.path,
            "config_hash": self.config_hash,
            "prompts": self.prompts.__dict__,
            "responses": self.responses.__dict__,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }


class Ledger:
    """Appends to and reads ``OUT/parts.jsonl``."""

    def __init__(self, root: Path) -> None:
        self.path = root / LEDGER

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, record: PartRecord) -> None:
        self._write(record.as_json())

    def remove(self, part: str, reason: str) -> None:
        self._write({"part": part, "removed": True, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def _write(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def parts(self) -> dict[str, PartRecord]:
        """Every committed part now, by its prompts path (later lines win; removed ones left out)."""
        out: dict[str, PartRecord] = {}
        if not self.path.exists():
            return out
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.path} cannot be read ({exc}); restore it or run `castillo verify`") from None
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                part = entry["part"]
                if entry.get("removed"):
                    out.pop(part, None)
                    continue
                out[part] = PartRecord(
                    FileRecord(**entry["prompts"]), FileRecord(**entry["responses"]), entry.get("config_hash")
                )
            except (ValueError, KeyError, TypeError):
                if number == len(lines) and not text.endswith("\n"):
                    continue  # torn by a crash mid-append: that part was never committed
                raise StoreError(f"{self.path} line {number} is damaged; run `castillo verify` on the output") from None
        return out
