"""``castillo prompts``: the exact prompts a run would send, to inspect them first."""

from __future__ import annotations

import json
from typing import Any

import click


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
) -> None:
    """Print the prompts a run would send: id, dataset, split, category and text.

    Texts are printed as they are (brackets, backslashes and all); the table shows the
    first 200 characters of each unless --full; --json gives every field exactly.
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
    if as_json:
        for p in prompt_set.prompts:
            record: dict[str, Any] = {
                "prompt_id": p.prompt_id,
                "dataset": p.dataset,
                "split": p.split,
                "category": p.category,
                "prompt_text": p.prompt_text,
            }
            if p.messages:
                record["messages"] = list(p.messages)
            print(json.dumps(record, ensure_ascii=False))
    else:
        from castillo_core.cli.tables import Column, console, print_table

        columns = [Column("prompt_id"), Column("split"), Column("category", long=True), Column("text", long=True)]
        rows = [[p.prompt_id, p.split, p.category or "-", _shown(p.prompt_text, full)] for p in prompt_set.prompts]
        print_table(console(), columns, rows, title=f"{corpus_cls.name}: {len(prompt_set.prompts)} prompts")
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


_SHOWN = 200


def _shown(text: str, full: bool) -> str:
    """The prompt text, or its first characters and how many more there are."""
    if full or len(text) <= _SHOWN:
        return text
    return f"{text[:_SHOWN]}... (+{len(text) - _SHOWN:,} characters; --full or --json for all)"
