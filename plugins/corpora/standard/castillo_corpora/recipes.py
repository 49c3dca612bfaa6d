"""CASTILLO v1's prompt recipes: one native record in, the prompt text out.

Each recipe is v1's ``*_generate_rawprompt_text`` (``src/data/rawdata_processor.py``)
without the tokenizer truncation, which belongs to the backend (``max_prompt_tokens``)
and is recorded there. The text must match v1 byte for byte: ``prompt_id`` is
``sha256(f"{dataset}_{prompt_text}")[:16]``, so one changed character loses the match
with the published dataset.

A record that cannot become a prompt raises :class:`BadRecord` with a reason a person
can act on; the corpus turns it into a ``Rejection``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class BadRecord(Exception):
    """A record that cannot become a prompt; the message is the rejection's reason."""


def as_mapping(record: Any) -> Mapping[str, Any]:
    if not isinstance(record, Mapping):
        raise BadRecord(f"record is a {type(record).__name__}, not an object with fields")
    return record


def text_field(record: Any, name: str, *, required: bool = True) -> str:
    """A string field; absent/None is "" when not ``required``; empty is refused when it is."""
    record = as_mapping(record)
    if name not in record or record[name] is None:
        if required:
            raise BadRecord(f"record has no field {name!r}")
        return ""
    value = record[name]
    if not isinstance(value, str):
        raise BadRecord(f"field {name!r} is a {type(value).__name__}, not a string")
    if required and not value.strip():
        raise BadRecord(f"field {name!r} is empty")
    return value


def string_list(record: Any, name: str) -> list[str]:
    record = as_mapping(record)
    value = record.get(name)
    if value is None:
        raise BadRecord(f"record has no field {name!r}")
    if not isinstance(value, (list, tuple)):
        raise BadRecord(f"field {name!r} is a {type(value).__name__}, not a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BadRecord(f"field {name!r} item {i} is a {type(item).__name__}, not a string")
    return list(value)


def alpaca(record: Any) -> str:
    """``instruction``, or ``instruction + "\\nInput: " + input`` when input is non-empty."""
    instruction = text_field(record, "instruction")
    extra = text_field(record, "input", required=False)
    return f"{instruction}\nInput: {extra}" if extra else instruction


def dolly(record: Any) -> str:
    """``instruction``, or ``instruction + "\\nContext: " + context`` when context is non-empty."""
    instruction = text_field(record, "instruction")
    context = text_field(record, "context", required=False)
    return f"{instruction}\nContext: {context}" if context else instruction


def sharegpt_turns(record: Any) -> list[Mapping[str, Any]]:
    """The conversation of a ShareGPT record (a non-empty list of turn objects)."""
    turns = as_mapping(record).get("conversations")
    if turns is None:
        raise BadRecord("record has no field 'conversations'")
    if not isinstance(turns, list):
        raise BadRecord(f"field 'conversations' is a {type(turns).__name__}, not a list of turns")
    if not turns:
        raise BadRecord("field 'conversations' is empty")
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise BadRecord(f"conversation turn {i} is a {type(turn).__name__}, not an object")
    return turns


def sharegpt_keep(record: Any) -> bool:
    """v1's filter: keep conversations that are non-empty and start with a human turn."""
    turns = as_mapping(record).get("conversations")
    if not isinstance(turns, list):
        raise BadRecord("field 'conversations' is missing or not a list")
    return bool(turns) and isinstance(turns[0], Mapping) and turns[0].get("from") == "human"


def sharegpt(record: Any) -> str:
    """The first turn's ``value``; the first turn must come from a human."""
    first = sharegpt_turns(record)[0]
    if first.get("from") != "human":
        raise BadRecord(f"conversation starts with a {first.get('from')!r} turn, not a human one")
    return text_field(first, "value")


def mbpp(record: Any) -> str:
    """v1's MBPP prompt: the task, then its test asserts."""
    record = as_mapping(record)
    key = "text" if "text" in record or "prompt" not in record else "prompt"  # full vs sanitized MBPP
    task = text_field(record, key)
    tests = string_list(record, "test_list")
    if not tests:
        raise BadRecord("field 'test_list' is empty")
    return (
        "You are an expert Python programmer, and here is your task: "
        + task
        + " Your code should pass these tests:\n\n"
        + "\n".join(tests)
        + "\n"
    )


def _apps_io(value: Any) -> Mapping[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadRecord(f"field 'input_output' is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, Mapping):
        raise BadRecord(f"field 'input_output' holds a {type(value).__name__}, not an object")
    for key in ("inputs", "outputs"):
        if not isinstance(value.get(key), list):
            raise BadRecord(f"field 'input_output' has no list {key!r}")
    return value


def apps(record: Any) -> str:
    """v1's APPS prompt: question, starter code if any, and the I/O examples if any."""
    question = text_field(record, "question")
    starter = text_field(record, "starter_code", required=False)
    io = _apps_io(as_mapping(record).get("input_output"))
    prompt = "QUESTION: " + question + "\n\n"
    if starter:
        prompt += "Your code should start with the following: \n" + starter + "\n"
    if io is not None:
        prompt += "The following is the standard input and output format: \n"
        prompt += "Inputs:\n"
        prompt += "\n".join(str(elem) for elem in io["inputs"])
        prompt += "\nOutputs:\n"
        prompt += "\n".join(str(elem) for elem in io["outputs"])
    return prompt


def ds1000(record: Any) -> str:
    """DS-1000's ``prompt``, unchanged."""
    return text_field(record, "prompt")


def bigcodebench(record: Any) -> str:
    """BigCodeBench's ``instruct_prompt``, unchanged."""
    return text_field(record, "instruct_prompt")


HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in one Python code block.\n\n"
)


def humaneval(record: Any, raw: bool = False) -> str:
    """HumanEval's ``prompt`` (a signature and docstring), wrapped in one instruction unless ``raw``."""
    code = text_field(record, "prompt")
    if raw:
        return code
    return HUMANEVAL_INSTRUCTION + "```python\n" + code.rstrip("\n") + "\n```"


_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}


def chat_messages(turns: Any, field: str) -> tuple[dict[str, str], ...]:
    """OpenAI-style messages from a list of turns, cut after the last user turn.

    Turns are ``{"role", "content"}`` or ShareGPT's ``{"from", "value"}``; the result
    ends in a user turn, the one the model is asked to answer.
    """
    if not isinstance(turns, list):
        raise BadRecord(f"field {field!r} is a {type(turns).__name__}, not a list of turns")
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise BadRecord(f"field {field!r} turn {i} is a {type(turn).__name__}, not an object")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if not isinstance(role, str) or role.lower() not in _ROLES:
            raise BadRecord(f"field {field!r} turn {i} has an unknown role {role!r}")
        if not isinstance(content, str):
            raise BadRecord(f"field {field!r} turn {i} content is a {type(content).__name__}, not a string")
        messages.append({"role": _ROLES[role.lower()], "content": content})
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise BadRecord(f"field {field!r} has no user turn")
    if not messages[last_user]["content"].strip():
        raise BadRecord(f"field {field!r} ends in an empty user turn")
    return tuple(messages[: last_user + 1])
