"""An export's destination directory, and the record of what an export wrote there.

An export writes only into an empty (or new) ``DEST``, or with ``--force`` into one that an
earlier export wrote: ``DEST/.castillo-export`` (JSON; no ``.json`` suffix, so a ``*.json`` glob
over a v1 export sees v1's files only) lists every file it wrote, with its sha256, and the
directories it created. ``--force`` removes exactly those files (and those
directories once empty) and nothing else, so a README.md or notes that a user keeps in
``DEST`` survive. It refuses, with one line naming the file, when:

- ``DEST`` is not empty and holds no such record (a directory castillo export did not create);
- a file the record lists was changed since (an edited card): it is the user's now;
- a file the new export would write already exists and the record does not list it.

The record is written before the first data file (every planned file, no checksums yet), so
an export killed half-way is still recognised and replaced by the next ``--force``; it is
rewritten with the checksums once every file is in place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from castillo_core import CastilloError, __version__, atomic_write_bytes

RECORD = ".castillo-export"


class ExportError(CastilloError):
    """An export that cannot be written (no rows, a DEST that holds other files)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(dest: Path, relative: object) -> Path | None:
    """``dest / relative`` when ``relative`` is a plain relative path below ``dest``, else None."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or "\\" in relative:
        return None
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in {"", ".", ".."} for part in pure.parts) or relative == RECORD:
        return None
    path = dest.joinpath(*pure.parts)
    if dest.resolve() not in path.resolve().parents:  # a folder replaced by a link to elsewhere
        return None
    return path


class ExportDest:
    """One export's DEST: checks it, clears an earlier export's files, records what is written."""

    def __init__(self, dest: Path, fmt: str, force: bool) -> None:
        self.dest, self.fmt, self.force = dest, fmt, force
        self.files: dict[str, str | None] = {}
        self.directories: list[str] = []

    def _read_record(self) -> dict[str, Any] | None:
        path = self.dest / RECORD
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None

    def prepare(self, planned: Iterable[str], directories: Iterable[str] = ()) -> None:
        """Check DEST, remove an earlier export's own files (``--force``), record the plan."""
        dest = self.dest
        if dest.exists() and not dest.is_dir():
            raise ExportError(f"{dest} is a file; pass a directory for the export")
        planned = list(planned)
        if dest.exists() and any(dest.iterdir()):
            if not self.force:
                raise ExportError(
                    f"{dest} is not empty; choose an empty directory, or pass --force to replace an earlier "
                    f"castillo export there (only the files it wrote, listed in {RECORD}, are replaced)"
                )
            self._clear_earlier(planned)
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create {dest}: {exc.strerror or exc}") from None
        self.directories = [d for d in directories if not (dest / d).exists()]
        self.files = dict.fromkeys(planned)
        self._write_record(complete=False)

    def _clear_earlier(self, planned: list[str]) -> None:
        dest = self.dest
        record = self._read_record()
        if record is None:
            raise ExportError(
                f"{dest} is not empty and holds no castillo export (no readable {RECORD}); --force replaces only "
                "the files an earlier export wrote, so nothing there was touched: choose an empty directory"
            )
        owned: list[Path] = []
        changed: list[str] = []
        for relative, checksum in record["files"].items():
            path = _inside(dest, relative)
            if path is None or path.is_symlink() or not path.is_file():
                continue  # not a file of ours (any more): leave it
            if checksum is not None and file_sha256(path) != checksum:
                changed.append(relative)
                continue
            owned.append(path)
        if changed:
            raise ExportError(
                f"{dest / changed[0]} changed since castillo export wrote it"
                + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
                + "; it is kept as yours: move it out of the destination or choose another one, then export again"
            )
        mine = {p.resolve() for p in owned}
        for relative in planned:
            path = dest / relative
            if (path.exists() or path.is_symlink()) and path.resolve() not in mine:
                raise ExportError(
                    f"{path} exists and was not written by castillo export; move it away or choose another destination"
                )
            for parent in list(path.relative_to(dest).parents)[:-1]:
                folder = dest / parent
                if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                    raise ExportError(
                        f"{folder} is not a directory castillo export can write into (a file or a link); "
                        "move it away or choose another destination"
                    )
        for path in owned:
            path.unlink()
        for relative in sorted(record.get("directories") or [], key=len, reverse=True):
            path = _inside(dest, relative)
            if path is not None and path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()

    def _write_record(self, complete: bool) -> None:
        record = {
            "castillo_export": self.fmt,
            "castillo_version": __version__,
            "complete": complete,
            "note": "files and directories castillo export wrote here; `castillo export --force` replaces only them",
            "directories": self.directories,
            "files": self.files,
        }
        atomic_write_bytes(self.dest / RECORD, (json.dumps(record, indent=1, ensure_ascii=False) + "\n").encode())

    def finish(self) -> None:
        """Record every written file's checksum: the export is complete."""
        for relative in self.files:
            self.files[relative] = file_sha256(self.dest / relative)
        self._write_record(complete=True)
