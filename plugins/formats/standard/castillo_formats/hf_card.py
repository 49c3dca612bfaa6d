"""The dataset card (README.md) of ``castillo export --format hf``.

The YAML header follows the Hub's conventions for dataset cards: ``license`` (the export's own
plus each source corpus's, as Hub licence ids: a mixed set is listed, not flattened to one),
``language`` and ``source_datasets`` taken from the corpora, ``pretty_name``, ``size_categories``,
``task_categories``, ``tags`` and ``configs`` (``original`` the default, each with the splits it
has). The body says what the dataset is, how to load it (code that runs as written against the
splits the export has), rows per config and split, provenance, the schema, the licences and how
to cite CASTILLO. It is plain text written here: no YAML library is needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

REPO_PLACEHOLDER = "ORG/NAME"
MARKER = "<!-- written by `castillo export --format hf`; `--force` replaces only the files in .castillo-export -->"


@dataclass(frozen=True)
class CorpusFacts:
    """What a card says about one source corpus."""

    licence: str
    languages: tuple[str, ...] = ()
    source_dataset: str | None = None


#: CASTILLO v1's corpora (docs/corpora.md), for data imported without the corpus plugins installed.
KNOWN_CORPORA = {
    "Alpaca": CorpusFacts("CC BY-NC 4.0", ("en",), "yahma/alpaca-cleaned"),
    "DollyDataset": CorpusFacts("CC BY-SA 3.0", ("en",), "databricks/databricks-dolly-15k"),
    "ShareGPT": CorpusFacts(
        "unclear (user-shared ChatGPT conversations, no licence stated)",
        ("en",),
        "anon8231489123/ShareGPT_Vicuna_unfiltered",
    ),
    "Mbpp": CorpusFacts("CC BY 4.0", ("en", "code"), "google-research-datasets/mbpp"),
    "Apps": CorpusFacts("MIT", ("en", "code"), "codeparrot/apps"),
    "DS1000": CorpusFacts("CC BY-SA 4.0", ("en", "code"), "xlangai/DS-1000"),
    "BigCodeBench": CorpusFacts("Apache-2.0", ("en", "code"), "bigcode/bigcodebench"),
    "HumanEval": CorpusFacts("MIT", ("en", "code"), "openai/openai_humaneval"),
}

COLUMN_MEANINGS = {
    "sample_id": 'sha256(f"{dataset}_{model}_topk_{top_k}_topp_{top_p}_temp_{temp}_{prompt_text}")[:16]',
    "prompt_id": 'sha256(f"{dataset}_{prompt_text}")[:16]',
    "model": 'model id with "/" replaced by "--"',
    "dataset": "source corpus",
    "prompt_text": "the prompt, before the chat template",
    "longest_response": 'text of the longest completion ("TEXT DEGENERATION" in sanitized rows that lost samples)',
    "shortest_response": "text of the shortest completion",
    "input_size": "prompt tokens after the chat template, model's tokenizer",
    "output_sizes": "the N completions' output token counts, in sample order",
    "output_mean": "mean of output_sizes",
    "output_std": "population standard deviation (ddof 0) of output_sizes",
    "output_percentiles": "p25, p50, p75, p99 of output_sizes (numpy linear interpolation)",
    "top_k": "top-k applied (0 = off)",
    "top_p": "top-p applied (1.0 = off)",
    "temp": "temperature applied",
    "category": 'corpus category or "undefined"',
    "gen_time": "seconds the backend spent on this prompt's N completions",
    "split": "the corpus split the prompt was drawn for (train / validate / test / full)",
    "backend": "inference backend",
    "model_revision": "resolved model revision where known",
    "n_samples": "N, completions kept",
    "max_new_tokens": "cap on generated tokens",
    "max_prompt_tokens": "prompt cap; longer prompts were truncated",
    "prompt_truncated": "the prompt was cut to max_prompt_tokens",
    "source_prompt_id": "with --truncation v1: the id of the uncut prompt (prompt_id is that of v1's cut text)",
    "seed": "the prompt's seed; sample i used seed + i",
    "finish_reasons": "stop or length, per sample",
    "n_length_capped": "samples that hit the cap",
    "output_min": "shortest length",
    "output_max": "longest length",
    "config_hash": "hash of the cell's configuration",
    "castillo_version": "castillo version that wrote the row",
    "sample_index": "the completion's position among the prompt's N (its seed is seed + sample_index)",
    "output_tokens": "the completion's length in tokens, model's tokenizer",
    "finish_reason": "stop or length",
    "text": "the completion's text",
    "latency": "seconds this completion took",
}

CITATION = """@misc{perezramirez2025castillo,
  title  = {CASTILLO: Characterizing Response Length Distributions of Large Language Models},
  author = {Perez-Ramirez, Daniel F. and Kostic, Dejan and Boman, Magnus},
  year   = {2025},
  eprint = {2505.16881},
  archivePrefix = {arXiv}
}"""

_CC = re.compile(r"^cc[ -]by((?:[ -](?:nc|sa|nd))*)[ -]v?(\d\.\d)")


def hub_license_id(licence: str) -> str:
    """A corpus licence as the Hub's licence id (``CC BY-NC 4.0`` -> ``cc-by-nc-4.0``); ``unknown`` when unclear."""
    text = licence.strip().lower()
    if text.startswith("cc0"):
        return "cc0-1.0"
    match = _CC.match(text)
    if match:
        parts = re.findall(r"nc|sa|nd", match.group(1))
        return "-".join(["cc-by", *parts, match.group(2)])
    if text.startswith("mit"):
        return "mit"
    if text.startswith("apache"):
        return "apache-2.0"
    if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", text):
        return text
    return "unknown"


def corpus_facts(datasets: Sequence[str]) -> dict[str, CorpusFacts]:
    """Each dataset's licence, languages and source: the installed corpus plugin's, else v1's known ones."""
    found: dict[str, CorpusFacts] = {}
    try:
        from castillo_core import get_plugins

        for entry in get_plugins().entries("corpus"):
            cls = entry.cls
            name, licence = getattr(cls, "dataset", ""), getattr(cls, "license", "")
            if not name or not licence or name in found:
                continue
            hub = getattr(cls, "hub", None)
            source = getattr(cls, "source_dataset", None) or getattr(hub, "repo", None)
            found[name] = CorpusFacts(str(licence), tuple(getattr(cls, "languages", ()) or ()), source)
    except Exception:  # noqa: BLE001 - a broken plugin must not stop an export; fall back to the table
        pass
    unknown = CorpusFacts("unknown: check the source corpus")
    return {d: found.get(d) or KNOWN_CORPORA.get(d) or unknown for d in datasets}


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M"


def _list(key: str, values: Sequence[str]) -> list[str]:
    return [f"{key}:", *(f"- {_q(v)}" for v in values)] if values else []


def card_yaml(
    license_id: str,
    title: str,
    rows: int,
    splits: dict[str, dict[str, int]],
    facts: dict[str, CorpusFacts],
    default: str,
) -> list[str]:
    """The card's YAML header: licences, languages, sources, size, and every config with its splits."""
    licences = list(dict.fromkeys([license_id, *(hub_license_id(f.licence) for f in facts.values())]))
    languages = list(dict.fromkeys(lang for f in facts.values() for lang in f.languages))
    sources = list(dict.fromkeys(f.source_dataset for f in facts.values() if f.source_dataset))
    lines = ["---", *_list("license", licences), *_list("language", languages)]
    lines += [
        f"pretty_name: {_q(title)}",
        *_list("source_datasets", sources),
        "task_categories:",
        "- text-generation",
        "tags:",
        "- castillo",
        "- response-length",
        "- llm-inference",
        "size_categories:",
        f"- {_size_category(rows)}",
        "configs:",
    ]
    for config, counts in splits.items():
        present = [split for split, n in counts.items() if n]
        if not present:
            continue
        lines.append(f"- config_name: {config}")
        if config == default:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split in present:
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    lines.append("---")
    return lines


def _md_table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in rows
    ]


def _schema_rows(schema: pa.Schema) -> list[list[str]]:
    rows = []
    for f in schema:
        meaning = COLUMN_MEANINGS.get(f.name)
        if meaning is None and f.metadata and b"description" in f.metadata:
            meaning = f.metadata[b"description"].decode()
        rows.append([f"`{f.name}`", f"`{f.type}`", meaning or "metric plugin column"])
    return rows


def load_snippet(repo: str, splits: dict[str, dict[str, int]], default: str) -> list[str]:
    """Python that loads this export as it is: only configs and splits it has."""

    def first(config: str) -> str | None:
        return next((s for s, n in splits.get(config, {}).items() if n), None)

    split = first(default)
    lines = [
        "```python",
        "from datasets import load_dataset",
        "",
        f'REPO = "{repo}"'
        + ("  # this dataset's Hub id, or the exported directory" if repo == REPO_PLACEHOLDER else ""),
        f'rows = load_dataset(REPO, split="{split}")  # config {default} (the default): every row as measured',
        'print(rows[0]["prompt_id"], rows[0]["output_sizes"], rows[0]["output_mean"])',
        "everything = load_dataset(REPO)  # a DatasetDict: " + ", ".join(s for s, n in splits[default].items() if n),
    ]
    for config in splits:
        other = first(config)
        if config != default and other is not None:
            name = re.sub(r"\W", "_", config)
            lines.append(f'{name} = load_dataset(REPO, "{config}", split="{other}")')
    lines.append("```")
    return lines


def card_text(
    *,
    title: str,
    license_id: str,
    repo: str,
    original: pa.Table,
    responses: pa.Table | None,
    rows: dict[str, dict[str, int]],
    views: dict[str, tuple[str, str]],
    default: str,
    provenance: list[dict[str, Any]],
    warnings: list[str],
    source: Path,
    version: str,
) -> str:
    """The README.md dataset card. ``views`` maps a derived config to its (view, detector)."""
    total = original.num_rows
    counts = original.select(["model", "dataset"]).group_by(["model", "dataset"]).aggregate([([], "count_all")])
    per_cell = sorted(
        (((str(c["model"]), str(c["dataset"])), c["count_all"]) for c in counts.to_pylist()),
        key=lambda cell: cell[0],
    )
    datasets = sorted({key[1] for key, _ in per_cell})
    facts = corpus_facts(datasets)
    split_names = list(dict.fromkeys(s for per in rows.values() for s, n in per.items() if n))
    lines = [*card_yaml(license_id, title, total, rows, facts, default), MARKER, "", f"# {title}", ""]
    lines += [
        f"Response-length distributions of LLMs, measured with [castillo](https://arxiv.org/abs/2505.16881) "
        f"{version}: for every ⟨prompt, model⟩ pair, N completions were drawn under fixed, recorded decoding "
        f"settings and their lengths counted with the model's own tokenizer. {total:,} rows, "
        f"{len({k[0] for k, _ in per_cell})} model(s) x {len(datasets)} dataset(s). The first columns are "
        "CASTILLO v1's, with v1's names and meanings, so this dataset concatenates with CASTILLO's.",
        "",
        "## Load",
        "",
        *load_snippet(repo, rows, default),
        "",
        "## Configs and splits",
        "",
        f"- `{default}` (the default): every row, unchanged: the numbers as measured.",
    ]
    for config, (view, detector) in views.items():
        if view == "degenerate":
            lines.append(f"- `{config}`: the rows that the `{detector}` detector flags, unchanged.")
        else:
            lines.append(
                f"- `{config}`: every row except those the `{detector}` detector leaves with no usable sample; in a "
                "flagged row the flagged lengths are removed, mean, std and percentiles recomputed, and "
                '`longest_response` set to "TEXT DEGENERATION" (CASTILLO v1\'s sanitizing).'
            )
    if "responses" in rows:
        lines.append(
            f"- `responses`: one row per completion (its text, length, finish reason), for every row of `{default}`."
        )
    lines += [
        "",
        "Each split holds the rows whose `split` column says so (`train`, `validate`, `test`; `full` for a corpus "
        "read whole; `other` for rows of no named split); no row is in two splits. A split or config with no "
        "rows has no files and is not declared.",
        "",
        *[f"> **Note.** {w}" for w in warnings],
        *([""] if warnings else []),
        *_md_table(
            ["config", *split_names], [[c, *(f"{per.get(s, 0):,}" for s in split_names)] for c, per in rows.items()]
        ),
        "",
        f"## Rows per model and dataset ({default})",
        "",
        *_md_table(["model", "dataset", "rows"], [[m, d, f"{n:,}"] for (m, d), n in per_cell]),
        "",
        "## Provenance",
        "",
        f"Exported from `{source.name}` by castillo {version}.",
        "",
        *_md_table(
            ["model", "revision", "backend", "dtype", "decoding", "hardware", "castillo", "source", "datasets"],
            [
                [
                    p["model"],
                    p["revision"],
                    p["backend"],
                    p["dtype"],
                    p["decoding"],
                    p["hardware"],
                    p["castillo_version"],
                    p["source"],
                    ", ".join(p["datasets"]),
                ]
                for p in provenance
            ],
        ),
        "",
        "## Schema",
        "",
        *_md_table(["column", "type", "meaning"], _schema_rows(original.schema)),
    ]
    if responses is not None and "responses" in rows:
        lines += [
            "",
            "Config `responses`:",
            "",
            *_md_table(["column", "type", "meaning"], _schema_rows(responses.schema)),
        ]
    lines += [
        "",
        "## Licences",
        "",
        f"The measurements: `{license_id}`. The prompts come from the source corpora below and keep their "
        "licences, so this dataset carries a mixed set of licences (all listed in the header); the responses "
        "were generated by the models listed above and are subject to their terms.",
        "",
        *_md_table(
            ["dataset", "source corpus", "licence", "Hub licence id"],
            [[d, facts[d].source_dataset or "-", facts[d].licence, hub_license_id(facts[d].licence)] for d in datasets],
        ),
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)
