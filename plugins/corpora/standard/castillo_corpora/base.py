"""The machinery every corpus of this package shares: sources, selection, rejections.

A corpus reads its records from one of three places:

* ``--source FILE``: a local file in the corpus's native format. The corpus applies
  its recipe's filter (ShareGPT: conversations that start with a human turn), then
  v1's selection for the split (train/validate/test/all), or takes every record in
  file order (``full``).
* ``--source DIR``: a directory of v1 split files ``raw_<Name>_<split>.json``. They
  hold v1's own selection, so ``--split test`` reads ``raw_<Name>_test.json`` as is.
* no source: the corpus's default (the Hugging Face hub through the optional
  ``datasets``/``huggingface_hub``, or a file a package ships).

Records that cannot become prompts come out as ``Rejection``\\ s naming the file and the
record's index in it, never as exceptions, so a run never dies on the 900th record.
Bad records stay in the pool the selection draws from, so one broken record does not
shift which other records v1's recipe selects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import ConfigError, Corpus, CorpusError, CorpusSelection, Prompt, Rejection, parse_options
from castillo_corpora.hub import HubSource, load_hub
from castillo_corpora.readers import Unreadable, read_file, v1_split_file
from castillo_corpora.recipes import BadRecord
from castillo_corpora.selection import SPLITS, V1_MAXIMUM, shuffle_split, stratified_split

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"val": "validate", "valid": "validate", "validation": "validate", "dev": "validate"}
KNOWN_SPLITS = (*SPLITS, "all", "full")

# Errors a malformed record can raise inside a recipe that the recipe did not foresee;
# they reject that record instead of ending the run.
_RECORD_ERRORS = (BadRecord, TypeError, ValueError, KeyError, AttributeError, IndexError)


class NoOptions(BaseModel):
    """Corpora without options still refuse unknown ones (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")


class HubOptions(NoOptions):
    """Options of a corpus whose default source is the Hugging Face Hub."""

    revision: str | None = Field(
        None, description="the hub commit, branch or tag to read (default: main); only without --source"
    )


class RecordCorpus(Corpus):
    """A corpus of native records, each turned into one prompt by :meth:`make_prompt`."""

    default_split = "test"
    options_model: ClassVar[type[BaseModel]] = NoOptions
    hub: ClassVar[HubSource | None] = None
    languages: ClassVar[tuple[str, ...]] = ()
    """Languages of the prompts (ISO 639-1, and "code"), for dataset cards."""
    source_dataset: ClassVar[str | None] = None
    """The Hub id of the source corpus when it is not ``hub``'s repository, for dataset cards."""
    stratify_field: ClassVar[str | None] = None
    maximum: ClassVar[int | None] = V1_MAXIMUM
    recipe_version: ClassVar[str] = "1"

    def __init__(self, selection: CorpusSelection) -> None:
        super().__init__(selection)
        self.options: Any = parse_options(self.options_model, selection.options, f"corpus {self.name}")
        requested = selection.split or self.default_split
        self._split = SPLIT_ALIASES.get(requested.lower(), requested.lower())
        if self._split not in KNOWN_SPLITS:
            raise ConfigError(
                f"corpus {self.name}: unknown split {requested!r}; known: {', '.join(KNOWN_SPLITS)} "
                "(train/validate/test: v1's 70/20/10 selection; all: the three of them; full: every record)"
            )

    @property
    def split(self) -> str:
        return self._split

    def version(self) -> str:
        """The recipe version: bumping it changes the config hash of every cell."""
        return self.recipe_version

    # -- what a corpus defines ---------------------------------------------------------

    def make_prompt(self, record: Any, index: int) -> Prompt:
        """One prompt from one native record; raise ``BadRecord`` for a record that cannot be one."""
        raise NotImplementedError

    def keep(self, record: Any) -> bool:
        """The recipe's filter before selection (v1 dropped these records before sampling)."""
        return True

    def strata(self) -> str | None:
        """The field v1 stratified its selection by, if any."""
        return self.stratify_field

    def cap(self) -> int | None:
        """At most this many records are drawn before the 70/20/10 split (v1: 2,000)."""
        return self.maximum

    def hub_source(self) -> HubSource | None:
        """The hub source read without ``--source``, at the revision ``-C revision=`` pins."""
        return self.hub.at(getattr(self.options, "revision", None)) if self.hub is not None else None

    def default_records(self) -> tuple[Sequence[Any], str]:
        """Records and a source label when no ``--source`` is given."""
        hub = self.hub_source()
        if hub is None:
            raise CorpusError(f"corpus {self.name} has no default source; pass --source FILE")
        return load_hub(hub, self.name), hub.label()

    # -- helpers for make_prompt -------------------------------------------------------

    def prompt(self, text: str, **fields: Any) -> Prompt:
        return Prompt(dataset=self.dataset_name(), split=self.split, prompt_text=text, **fields)

    # -- reading -----------------------------------------------------------------------

    def iter_prompts(self) -> Iterator[Prompt | Rejection]:
        for item in self._records():
            if isinstance(item, Rejection):
                yield item
                continue
            index, record, source, split = item
            built = self._build(record, index, source)
            if isinstance(built, Prompt) and built.split != split:
                built = built.model_copy(update={"split": split})  # "all": each prompt keeps its v1 split
            yield built

    def _reject(self, source: str, index: int, reason: str) -> Rejection:
        return Rejection(dataset=self.dataset_name(), source=source, index=index, reason=reason)

    def _build(self, record: Any, index: int, source: str) -> Prompt | Rejection:
        if isinstance(record, Unreadable):
            return self._reject(source, index, record.reason)
        try:
            return self.make_prompt(record, index)
        except BadRecord as exc:
            return self._reject(source, index, str(exc))
        except _RECORD_ERRORS as exc:
            return self._reject(source, index, f"unexpected record shape ({type(exc).__name__}: {exc})")

    def _records(self) -> Iterator[tuple[int, Any, str, str] | Rejection]:
        source = self.selection.source
        if source is None:
            records, label = self.default_records()
            yield from self._select(records, label)
            return
        if getattr(self.options, "revision", None):
            raise ConfigError(
                f"corpus {self.name}: -C revision= picks a revision of the hub source; it has no meaning with "
                f"--source {source} (drop one of them)"
            )
        path = Path(source).expanduser()
        if path.is_dir():
            yield from self._v1_directory(path)
            return
        yield from self._select(read_file(path, self.name), str(path))

    def _v1_directory(self, directory: Path) -> Iterator[tuple[int, Any, str, str]]:
        if self.split == "full":
            raise CorpusError(
                f"corpus {self.name}: {directory} is a directory of v1 split files, which hold only v1's "
                "selection; use --split train, validate, test or all, or pass the corpus's native file "
                "as --source for --split full"
            )
        splits = SPLITS if self.split == "all" else (self.split,)
        files = [(split, v1_split_file(directory, self.dataset_name(), split, self.name)) for split in splits]
        for split, file in files:
            for index, record in enumerate(read_file(file, self.name)):
                yield index, record, str(file), split

    def _select(self, records: Sequence[Any], label: str) -> Iterator[tuple[int, Any, str, str] | Rejection]:
        strata_field = None if self.split == "full" else self.strata()  # "full" draws nothing
        pool: list[tuple[int, Any]] = []
        strata: list[str] = []
        dropped = 0
        for index, record in enumerate(records):
            if not isinstance(record, Unreadable):
                try:
                    if not self.keep(record):
                        dropped += 1
                        continue
                except _RECORD_ERRORS:
                    pass  # kept in the pool; rejected with its reason if selected
            if strata_field is not None:
                try:
                    strata.append(self._stratum(record, strata_field))
                except BadRecord as exc:
                    yield self._reject(label, index, f"{exc} (needed to stratify the selection)")
                    continue
            pool.append((index, record))
        if dropped:
            log.info(
                "corpus %s: %d of %d records of %s left out by the recipe's filter",
                self.name,
                dropped,
                len(records),
                label,
            )
        for position, split in self._positions(len(pool), strata if strata_field else None):
            index, record = pool[position]
            yield index, record, label, split

    @staticmethod
    def _stratum(record: Any, field: str) -> str:
        if isinstance(record, Unreadable):
            raise BadRecord(record.reason)
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise BadRecord(f"field {field!r} is missing or not a string")
        return value

    def _positions(self, n: int, strata: list[str] | None) -> list[tuple[int, str]]:
        """Pool positions to read, each with the split its prompt is stored under."""
        if self.split == "full":
            return [(p, "full") for p in range(n)]
        seed = self.selection.sample_seed
        if strata is not None:
            splits = stratified_split(strata, seed=seed, maximum=self.cap())
        else:
            splits = shuffle_split(n, seed=seed, maximum=self.cap())
        wanted = SPLITS if self.split == "all" else (self.split,)
        return [(p, split) for split in wanted for p in splits[split]]
