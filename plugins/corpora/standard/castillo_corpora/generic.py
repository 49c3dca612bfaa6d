"""Generic corpora: any local file (``jsonl``) or hub dataset (``hf``) of prompts.

Options name the fields: the prompt, an optional messages field (a conversation), a
category and a record id. The stored dataset name comes from the ``dataset`` option
(default: the file's stem, or the hub repository's name), so results of two different
files never share a partition by accident.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from castillo_core import ConfigError, CorpusError, Prompt
from castillo_corpora import recipes
from castillo_corpora.base import RecordCorpus
from castillo_corpora.corpora import conversation_prompt
from castillo_corpora.hub import HubSource, load_hub

_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class GenericOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="stored dataset name (default: file stem or repo name)")
    prompt_field: str = Field("prompt", description="field holding the prompt text")
    messages_field: str | None = Field(
        None, description="field holding a conversation (role/content or from/value turns); used instead of the prompt"
    )
    category_field: str | None = Field(None, description="field holding the category (default: 'undefined')")
    id_field: str | None = Field(None, description="field holding a record id, kept as metadata 'record_id'")
    stratify_field: str | None = Field(None, description="stratify train/validate/test by this field (as v1's Dolly)")
    maximum: int | None = Field(None, ge=1, description="draw at most this many records before the 70/20/10 split")

    @field_validator("dataset")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _DATASET_NAME.match(value):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '_', '.', '-'")
        return value


class HfOptions(GenericOptions):
    config: str | None = Field(None, description="the hub dataset's configuration (subset) name (default: the card's)")
    revision: str | None = Field(None, description="the hub commit, branch or tag to read (default: main)")
    hf_split: str = Field("train", description="the hub dataset's split to read")
    data_file: str | None = Field(None, description="read this file of the hub repository instead of a split")


def _sanitize(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")
    return cleaned or "Custom"


class JsonlCorpus(RecordCorpus):
    """Prompts from any local json/jsonl/parquet file, fields named by options."""

    name = "jsonl"
    dataset = "Custom"
    description = "any local json/jsonl/parquet[.gz] file; -C prompt_field=..., -C dataset=NAME"
    source_note = "--source FILE (required); fields named by -C prompt_field/messages_field/category_field/id_field"
    license = "that of your data"
    size = "your file"
    default_split = "full"
    options_model = GenericOptions
    maximum = None

    def dataset_name(self) -> str:
        if self.options.dataset:
            return str(self.options.dataset)
        source = self.selection.source
        if source:
            return _sanitize(Path(source).name.split(".")[0])
        return self.dataset

    def strata(self) -> str | None:
        return self.options.stratify_field

    def cap(self) -> int | None:
        return self.options.maximum

    def default_records(self) -> tuple[Sequence[Any], str]:
        raise CorpusError(f"corpus {self.name} needs --source FILE (a json, jsonl or parquet file, optionally .gz)")

    def make_prompt(self, record: Any, index: int) -> Prompt:
        options = self.options
        record = recipes.as_mapping(record)
        metadata: dict[str, Any] = {"index": index}
        if options.id_field:
            if options.id_field not in record:
                raise recipes.BadRecord(f"record has no field {options.id_field!r}")
            value = record[options.id_field]
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise recipes.BadRecord(f"field {options.id_field!r} is a {type(value).__name__}, not a string or int")
            metadata["record_id"] = value
        category = "undefined"
        if options.category_field:
            category = recipes.text_field(record, options.category_field, required=False) or "undefined"
        if options.messages_field:
            if options.messages_field not in record:
                raise recipes.BadRecord(f"record has no field {options.messages_field!r}")
            messages = recipes.chat_messages(record[options.messages_field], options.messages_field)
            prompt = conversation_prompt(self, messages, metadata)
            return prompt.model_copy(update={"category": category}) if category != "undefined" else prompt
        text = recipes.text_field(record, options.prompt_field)
        return self.prompt(text, category=category, metadata=metadata)


class HubCorpus(JsonlCorpus):
    """Prompts from a Hugging Face hub dataset (``--source org/name``), fields named by options."""

    name = "hf"
    description = "any Hugging Face hub dataset: --source org/name, -C prompt_field=..., needs `datasets`"
    source_note = "--source ORG/NAME on the hub (needs the hub extra), or a local file like jsonl"
    size = "the hub dataset's"
    options_model = HfOptions

    def dataset_name(self) -> str:
        if self.options.dataset:
            return str(self.options.dataset)
        source = self.selection.source
        if source and not Path(source).exists():
            return _sanitize(source.rstrip("/").split("/")[-1])
        return super().dataset_name()

    def _records(self) -> Iterator[Any]:
        source = self.selection.source
        if source is None:
            raise ConfigError("corpus hf needs --source ORG/NAME (a Hugging Face hub dataset) or a local file")
        if Path(source).expanduser().exists():
            yield from super()._records()
            return
        options = self.options
        hub = HubSource(
            source,
            filename=options.data_file,
            config=options.config,
            splits=(options.hf_split,),
            revision=options.revision,
        )
        yield from self._select(load_hub(hub, self.name, generic=True), hub.label())
