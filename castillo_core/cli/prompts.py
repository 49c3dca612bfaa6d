"""``castillo prompts``: the exact prompts a run would send, to inspect them first."""

from __future__ import annotations

import json
from typing import Any

import click

from castillo_core.api.rendering import SOURCE_PROMPT_ID


@click.command("prompts")
@click.option("--corpus", required=True, help="Corpus name (see `castillo list corpora`).")
@click.option("--source", help="Corpus source file or directory.")
@click.option("--split", help="Split (train, validate, test, full, ...).")
@click.option("--limit", type=int, help="The first LIMIT prompts of the selection.")
@click.option("--sample-seed", type=int, default=42, show_default=True, help="Seed of the corpus's sampling.")
@click.option("-C", "--corpus-option", "corpus_options", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per prompt (id, dataset, split, category, text)."
)
@click.option("--strict", is_flag=True, help="Fail when any record is rejected.")
@click.option("--full", is_flag=True, help="Whole prompt texts in the table (default: the first 200 characters).")
@click.option(
    "--tokenizer",
    metavar="ID|PATH",
    help="Render with this model's tokenizer (a hub id in the local cache, a directory or a .gguf file): "
    "token counts, truncation and the ids a run of that model stores.",
)
@click.option(
    "--max-prompt-tokens",
    type=click.IntRange(min=1),
    default=2500,
    show_default=True,
    help="With --tokenizer: the cap.",
)
@click.option(
    "--truncation",
    type=click.Choice(["template", "v1"]),
    default="template",
    show_default=True,
    help="With --tokenizer: castillo's truncation, or CASTILLO v1's (the raw text cut, then its id).",
)
def command(
    corpus: str,
    source: str | None,
    split: str | None,
    limit: int | None,
    sample_seed: int,
    corpus_options: tuple[str, ...],
    as_json: bool,
    strict: bool,
    full: bool,
    tokenizer: str | None,
    max_prompt_tokens: int,
    truncation: str,
) -> None:
    """Print the prompts a run would send: id, dataset, split, category and text.

    Texts are printed as they are (brackets, backslashes and all); the table shows the
    first 200 characters of each unless --full; --json gives every field exactly.
    With --tokenizer, each prompt as a run of that model stores it: its token count after
    the chat template (input_size), whether it was cut, and under --truncation v1 the cut
    text with its id (and the uncut prompt's id as source_prompt_id), before any GPU is spent.
    """
    from castillo_core.api.records import CorpusSelection
    from castillo_core.cli import _parse_kv
    from castillo_core.engine.prompts import resolve_source, select_prompts
    from castillo_core.plugins import get_plugins

    corpus_cls = get_plugins().corpus(corpus)
    selection = CorpusSelection(
        corpus=corpus_cls.name,
        source=resolve_source(source),
        split=split,
        limit=limit,
        sample_seed=sample_seed,
        options=_parse_kv(corpus_options, "--corpus-option"),
        strict=strict,
    )
    prompt_set = select_prompts(corpus_cls, selection)
    prompts = list(prompt_set.prompts)
    rendered = _render(tokenizer, prompts, max_prompt_tokens, truncation) if tokenizer else None
    if rendered is not None:
        prompts = [p for p, _ in rendered]
    if as_json:
        for index, p in enumerate(prompts):
            record: dict[str, Any] = {
                "prompt_id": p.prompt_id,
                "dataset": p.dataset,
                "split": p.split,
                "category": p.category,
                "prompt_text": p.prompt_text,
            }
            if p.messages:
                record["messages"] = list(p.messages)
            if rendered is not None:
                info = rendered[index][1]
                record.update(
                    input_size=info.input_size,
                    prompt_truncated=info.truncated,
                    source_prompt_id=p.metadata.get(SOURCE_PROMPT_ID),
                )
            print(json.dumps(record, ensure_ascii=False))
    else:
        from castillo_core.cli.tables import Column, console, print_table

        columns = [Column("prompt_id"), Column("split"), Column("category", long=True), Column("text", long=True)]
        rows = [[p.prompt_id, p.split, p.category or "-", _shown(p.prompt_text, full)] for p in prompts]
        title = f"{corpus_cls.name}: {len(prompts)} prompts"
        if rendered is not None:
            columns[2:2] = [Column("tokens", numeric=True), Column("cut")]
            for row, (p, info) in zip(rows, rendered, strict=True):
                cut = ("from " + p.metadata[SOURCE_PROMPT_ID]) if SOURCE_PROMPT_ID in p.metadata else "yes"
                row[2:2] = [f"{info.input_size:,}", cut if info.truncated else "-"]
            cut_count = sum(info.truncated for _, info in rendered)
            title += f", {cut_count} cut to {max_prompt_tokens} tokens ({truncation} truncation, {tokenizer})"
        print_table(console(), columns, rows, title=title)
    for r in prompt_set.rejections[:20]:
        click.echo(f"rejected: {r.source} record {r.index}: {r.reason}", err=True)
    if len(prompt_set.rejections) > 20:
        click.echo(f"... {len(prompt_set.rejections) - 20} more rejected", err=True)
    if prompt_set.duplicates:
        click.echo(
            f"{len(prompt_set.duplicates)} prompt text(s) appear more than once "
            f"({sum(prompt_set.duplicates.values())} extra copies, merged)",
            err=True,
        )


def _render(tokenizer_name: str, prompts: list[Any], cap: int, truncation: str) -> list[tuple[Any, Any]]:
    """Each prompt as a run with this tokenizer stores it (cut under v1), with its rendering."""
    from castillo_core.api.rendering import cut_with_tokenizer, render_with_tokenizer, v1_cut_prompt

    tokenizer = _load_tokenizer(tokenizer_name)
    if truncation == "v1":
        cuts = cut_with_tokenizer(tokenizer, [p.prompt_text for p in prompts], cap)
        prompts = [p if text is None else v1_cut_prompt(p, text) for p, text in zip(prompts, cuts, strict=True)]
        rendered = render_with_tokenizer(tokenizer, prompts, 2**31 - 1)
        rendered = [
            r.model_copy(update={"truncated": SOURCE_PROMPT_ID in p.metadata})
            for p, r in zip(prompts, rendered, strict=True)
        ]
    else:
        rendered = render_with_tokenizer(tokenizer, prompts, cap)
    return list(zip(prompts, rendered, strict=True))


def _load_tokenizer(name: str) -> Any:
    """A Hugging Face tokenizer by hub id (from the local cache when offline), directory or GGUF file."""
    from pathlib import Path

    from castillo_core.api.errors import ConfigError

    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("--tokenizer needs transformers: pip install transformers") from None
    path = Path(name).expanduser()
    try:
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--tokenizer {name}: cannot load a tokenizer: {exc}") from None


_SHOWN = 200


def _shown(text: str, full: bool) -> str:
    """The prompt text, or its first characters and how many more there are."""
    if full or len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... (+{len(text) - _SHOWN:,} characters; --full or --json for all)"
