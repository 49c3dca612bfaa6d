"""A cell's prompts: the corpus's deterministic selection, rejections kept, duplicates merged."""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from castillo_core.api.contracts import Corpus
from castillo_core.api.errors import CastilloError, CorpusError
from castillo_core.api.records import CorpusSelection, Prompt, Rejection


@dataclass
class PromptSet:
    """The prompts of a cell after selection, with what was rejected or merged."""

    prompts: list[Prompt]
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)  # prompt_id -> extra copies


def resolve_source(value: str | None) -> str | None:
    """A corpus source as the config records it: an existing local path made absolute."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(source: str | None) -> str | None:
    """The content of a local corpus source (a file, or every file of a directory), as a sha256.

    ``None`` for sources that are not local paths (a hub name): their revision is the corpus's
    business (``Corpus.version``).
    """
    if source is None:
        return None
    path = Path(source)
    if path.is_file():
        stat = path.stat()
        return "sha256:" + _digest(str(path), stat.st_size, stat.st_mtime_ns)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            stat = file.stat()
            digest.update(
                f"{file.relative_to(path).as_posix()}\0{_digest(str(file), stat.st_size, stat.st_mtime_ns)}\n".encode()
            )
        return "sha256:" + digest.hexdigest()
    return None


def select_prompts(corpus_cls: type[Corpus], selection: CorpusSelection) -> PromptSet:
    """Read a selection's prompts: rejections kept, duplicates merged and counted, limit applied.

    A prompt id is the resume key, so a text that appears twice is generated once (and
    counted, so the user is told).
    """
    corpus = corpus_cls(selection)
    prompts: list[Prompt] = []
    rejections: list[Rejection] = []
    seen: set[str] = set()
    duplicates: Counter[str] = Counter()
    limit = selection.limit
    try:
        for item in corpus.iter_prompts():
            if isinstance(item, Rejection):
                rejections.append(item)
                continue
            if not isinstance(item, Prompt):
                raise CorpusError(f"corpus {corpus_cls.name} yielded {type(item).__name__}, not a Prompt")
            if item.prompt_id in seen:
                duplicates[item.prompt_id] += 1
                continue
            if limit is not None and len(prompts) >= limit:
                break
            seen.add(item.prompt_id)
            prompts.append(item)
    except CastilloError:
        raise
    except Exception as exc:  # a corpus bug must still name the corpus
        raise CorpusError(f"corpus {corpus_cls.name} failed while reading prompts: {exc}") from exc
    if rejections and selection.strict:
        first = rejections[0]
        raise CorpusError(
            f"corpus {corpus_cls.name}: {len(rejections)} record(s) rejected (--strict); first: "
            f"{first.source} record {first.index}: {first.reason}"
        )
    return PromptSet(prompts, rejections, dict(duplicates))
