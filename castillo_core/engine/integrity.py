"""``castillo verify``: every check of a store, and the repair that makes the next run regenerate exactly what is bad.

Checks, beyond the cheap ones every writer and reader makes (:meth:`Store.problems`):
each committed file's sha256 and row count against the ledger; each prompts row has its N
responses (and no responses row lacks its prompt); no prompt is stored twice. ``repair``
quarantines damaged, foreign and incomplete parts (their prompts are generated again by
the next run) and rewrites a part that duplicates prompts stored elsewhere without them (so
nothing is generated twice and nothing good is lost).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from castillo_core.engine.ledger import PartRecord
from castillo_core.engine.scan import digest, hidden
from castillo_core.engine.store import QUARANTINE, Store, part_metadata


@dataclass
class Problem:
    """One bad part: which, what is wrong, and what repair does about it."""

    part: str  # the prompts part (or the stray file) at fault, relative to the output
    what: str
    action: str = "quarantine"  # quarantine | drop-duplicates
    duplicates: list[str] = field(default_factory=list)  # prompt keys to drop from the part


@dataclass
class VerifyReport:
    out: str
    parts: int = 0
    prompts: int = 0
    responses: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: Store) -> VerifyReport:
    """Every check; nothing is changed."""
    report = VerifyReport(out=str(store.root))
    committed = store.ledger.parts()
    seen: Counter[str] = Counter()
    keys_by_part: dict[str, list[str]] = {}
    for where, what in store.problems():
        part = _prompts_of(where)
        if part not in {p.part for p in report.problems}:
            report.problems.append(Problem(part, f"{where} {what}"))
    bad = {p.part for p in report.problems}
    for rel, record in sorted(committed.items()):
        if rel in bad:
            continue
        report.parts += 1
        problem = _check_files(store, record) or _check_rows(store, rel, keys_by_part)
        if problem:
            report.problems.append(Problem(rel, problem))
            keys_by_part.pop(rel, None)
            continue
        seen.update(keys_by_part[rel])
    for rel, keys in keys_by_part.items():
        report.prompts += len(keys)
        dupes = [k for k in keys if seen[k] > 1]
        if dupes and not _first_holder(rel, dupes[0], keys_by_part):
            report.problems.append(
                Problem(rel, f"{len(dupes)} prompt(s) also stored in another part", "drop-duplicates", dupes)
            )
    responses = store.root / "responses"
    for path in sorted(responses.rglob("part-*.parquet")) if responses.exists() else []:
        if not hidden(path, store.root) and not (store.root / "prompts" / path.relative_to(responses)).exists():
            report.problems.append(Problem(path.relative_to(store.root).as_posix(), "responses without prompts"))
    report.responses = sum(r.responses.rows for k, r in committed.items() if k not in bad)
    return report


def _prompts_of(path: str) -> str:
    return "prompts/" + path.split("/", 1)[1] if path.startswith("responses/") else path


def _check_files(store: Store, record: PartRecord) -> str | None:
    for file in (record.prompts, record.responses):
        path = store.root / file.path
        if not path.exists():
            return f"{file.path} is missing"
        if digest(path) != file.sha256:
            return f"{file.path} does not have the content that was written (checksum differs)"
        try:
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowInvalid) as exc:
            return f"{file.path} cannot be read ({exc})"
        if rows != file.rows:
            return f"{file.path} has {rows} rows, {file.rows} were written"
    return None


def _check_rows(store: Store, rel: str, keys_by_part: dict[str, list[str]]) -> str | None:
    """Each prompts row has exactly its N responses in the partner part."""
    prompts = pq.read_table(store.root / rel, columns=["sample_id", "config_hash", "n_samples"])
    responses = pq.read_table(store.responses_part(store.root / rel), columns=["sample_id", "config_hash"])
    keys = pc.binary_join_element_wise(prompts["sample_id"], prompts["config_hash"], "\x00").to_pylist()
    keys_by_part[rel] = keys
    counts = Counter(pc.binary_join_element_wise(responses["sample_id"], responses["config_hash"], "\x00").to_pylist())
    wanted = dict(zip(keys, prompts["n_samples"].to_pylist(), strict=True))
    for key, n in wanted.items():
        if counts.get(key, 0) != n:
            return f"a prompt has {counts.get(key, 0)} responses, not its {n}"
    stray = set(counts) - set(wanted)
    if stray:
        return f"{len(stray)} response group(s) have no prompts row"
    if len(keys) != len(set(keys)):
        return "a prompt is stored twice in the part"
    return None


def _first_holder(rel: str, key: str, keys_by_part: dict[str, list[str]]) -> bool:
    """Whether ``rel`` is the first part (in path order) holding ``key``: that copy is kept."""
    return next(p for p in sorted(keys_by_part) if key in keys_by_part[p]) == rel


def repair(store: Store, report: VerifyReport) -> VerifyReport:
    """Quarantine what is bad (or drop duplicated prompts); the next run regenerates exactly that."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for problem in report.problems:
        prompts = store.root / problem.part
        if problem.action == "drop-duplicates":
            _drop_rows(store, prompts, set(problem.duplicates))
        else:
            for path in (prompts, store.responses_part(prompts) if problem.part.startswith("prompts/") else prompts):
                if path.exists():
                    target = store.root / QUARANTINE / stamp / path.relative_to(store.root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(path), str(target))
            if problem.part in store.ledger.parts():
                store.ledger.remove(problem.part, problem.what)
        report.repaired.append(f"{problem.part}: {problem.what} ({problem.action})")
    return report


def _drop_rows(store: Store, prompts_path: Path, keys: set[str]) -> None:
    prompts = pq.read_table(prompts_path)
    responses = pq.read_table(store.responses_part(prompts_path))

    def keep(table: pa.Table) -> pa.Array:
        joined = pc.binary_join_element_wise(table["sample_id"], table["config_hash"], "\x00")
        return pc.invert(pc.is_in(joined, value_set=pa.array(sorted(keys))))

    meta = part_metadata(prompts_path)
    meta.pop("schema_version", None)
    store.rewrite_part(prompts_path, prompts.filter(keep(prompts)), responses.filter(keep(responses)), meta)
