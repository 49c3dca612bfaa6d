"""Opening an output: finish or clean what a crash left, move old layouts, and the cheap integrity checks.

Called by :meth:`castillo_core.engine.store.Store.open` (writers, under the lock) and
:meth:`~castillo_core.engine.store.Store.check` (every reader); ``castillo verify`` adds the
expensive checks (:mod:`castillo_core.engine.integrity`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from castillo_core.api.errors import StoreError
from castillo_core.engine.ledger import FileRecord, PartRecord
from castillo_core.engine.store import LEDGER_NAME, QUARANTINE, TABLES, Store, partition_dir

log = logging.getLogger(__name__)


@dataclass
class ScanReport:
    """What opening an output directory found besides good parts."""

    removed_temporary: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    adopted: int = 0

    def messages(self) -> list[str]:
        out = []
        if self.completed:
            out.append(f"completed {len(self.completed)} part(s) whose commit a crash interrupted")
        if self.adopted:
            out.append(f"recorded {self.adopted} part(s) written before castillo kept a ledger in {LEDGER_NAME}")
        if self.removed_temporary:
            out.append(f"removed {len(self.removed_temporary)} temporary file(s) left by an interrupted write")
        if self.quarantined:
            out.append(
                f"moved {len(self.quarantined)} part(s) without their prompts partner to {QUARANTINE}/ "
                f"(their prompts will be generated again): {', '.join(self.quarantined[:3])}"
            )
        if self.unreadable:
            out.append(f"ignored {len(self.unreadable)} unreadable part(s): {', '.join(self.unreadable[:3])}")
        return out


def scan(store: Store) -> ScanReport:
    report = ScanReport()
    migrate_layout(store)
    committed = store.ledger.parts()
    for tmp in (
        sorted((store.root / "prompts").rglob(".tmp-part-*.parquet")) if (store.root / "prompts").exists() else []
    ):
        final = tmp.with_name(tmp.name.removeprefix(".tmp-"))
        record = committed.get(store.rel(final))
        if record is not None and not final.exists() and digest(tmp) == record.prompts.sha256:
            os.replace(tmp, final)  # the ledger says committed: finish the rename
            report.completed.append(store.rel(final))
    for table in TABLES:
        base = store.root / table
        if base.exists():
            for tmp in base.rglob(".tmp-*"):
                tmp.unlink(missing_ok=True)
                report.removed_temporary.append(store.rel(tmp))
    responses = store.root / "responses"
    if responses.exists():
        for part in responses.rglob("part-*.parquet"):
            partner = store.root / "prompts" / part.relative_to(responses)
            if not partner.exists():
                store.quarantine(part)
                report.quarantined.append(store.rel(part))
                if store.rel(partner) in committed:
                    store.ledger.remove(store.rel(partner), "its prompts file never arrived")
    if not store.ledger.exists() and store.prompt_parts():
        report.adopted = adopt(store)
    for message in report.messages():
        log.warning("%s: %s", store.root, message)
    return report


def migrate_layout(store: Store) -> None:
    """Move ``model=X/dataset=Y`` directories (castillo 0.1) to the plain encoded layout."""
    if store.ledger.exists():
        return  # written by this layout's castillo: nothing to move
    for table in TABLES:
        base = store.root / table
        for model_dir in sorted(base.glob("model=*")) if base.exists() else []:
            for dataset_dir in sorted(model_dir.glob("dataset=*")):
                target = partition_dir(
                    store.root,
                    table,
                    model_dir.name.removeprefix("model="),
                    dataset_dir.name.removeprefix("dataset="),
                )
                target.mkdir(parents=True, exist_ok=True)
                for item in dataset_dir.iterdir():
                    os.replace(item, target / item.name)
                dataset_dir.rmdir()
            model_dir.rmdir()


def adopt(store: Store) -> int:
    """Record the parts of an output written before the ledger existed (trusted as they are)."""
    count = 0
    for part in store.prompt_parts():
        partner = store.responses_part(part)
        if partner.exists():
            store.ledger.append(PartRecord(file_record(store.root, part), file_record(store.root, partner)))
            count += 1
    return count


def check(store: Store) -> None:
    """The cheap integrity checks (no hashing): every part committed, present and of its recorded size.

    Raises one line naming the first bad part and the way forward. An output without a
    ledger (written before castillo kept one, and not yet opened by a writer) is not checked.
    """
    problems = find_problems(store)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreError(
            f"{store.root}: part {problems[0][0]} {problems[0][1]}{more}; run `castillo verify {store.root}` to "
            f"see every problem, and `castillo verify {store.root} --repair` to quarantine them (the next run "
            "generates their prompts again)"
        )


def find_problems(store: Store) -> list[tuple[str, str]]:
    """What :meth:`check` refuses, as (file relative to the output, what is wrong)."""
    if not store.ledger.exists():
        return []
    committed = store.ledger.parts()
    out: list[tuple[str, str]] = []
    for record in committed.values():
        for file in (record.prompts, record.responses):
            path = store.root / file.path
            if not path.exists():
                if file is record.prompts and pending_commit(path, file.size):
                    continue  # readers skip the part until its prompts arrive; a writer completes it
                out.append((file.path, "is missing"))
            elif path.stat().st_size != file.size:
                out.append((file.path, f"has {path.stat().st_size} bytes, {file.size} were written"))
    recorded = {f.path for r in committed.values() for f in (r.prompts, r.responses)}
    for table in TABLES:
        base = store.root / table
        for path in sorted(base.rglob("part-*.parquet")) if base.exists() else []:
            if not hidden(path, store.root) and store.rel(path) not in recorded:
                out.append((store.rel(path), "was not written by castillo into this output (a copy?)"))
    return out


def pending_commit(final: Path, size: int) -> bool:
    """The ledger records the part, and its prompts file still has its temporary name.

    A writer appends the ledger line, then renames the prompts file: a reader can land in
    between (a live writer finishes a moment later), and so does a kill (the next writer
    finishes the rename when it opens the output). Either way nothing is lost or damaged.
    """
    tmp = final.with_name(".tmp-" + final.name)
    return tmp.exists() and tmp.stat().st_size == size


def hidden(path: Path, root: Path) -> bool:
    """Under a ``.``/``_`` directory or named so (temporary files, the quarantine): never data."""
    return any(p.startswith((".", "_")) for p in path.relative_to(root).parts)


def digest(path: Path) -> str:

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(root: Path, path: Path) -> FileRecord:
    return FileRecord(
        path.relative_to(root).as_posix(), pq.read_metadata(path).num_rows, path.stat().st_size, digest(path)
    )
