"""``castillo export OUT --format hf DEST``: a directory ready to push to the Hugging Face hub.

The layout follows the published CASTILLO card (huggingface.co/datasets/danfperam/castillo):
three configs, ``original``, ``sanitized`` (the default) and ``degenerate``, each with the
splits ``train``, ``validate``, ``test`` and ``full``, one or more Parquet files per split::

    DEST/README.md                                   the dataset card (YAML header: configs, splits)
    DEST/<config>/<split>-00000-of-00001.parquet
    DEST/.castillo-export                            what the export wrote (``--force`` replaces only that)

The views come from :func:`castillo_views.views.compute_views` (v1's rule by default), so
the exported configs are exactly what ``castillo sanitize`` writes. ``full`` holds every
row of the view; ``train``/``validate``/``test`` hold the rows whose ``split`` column says
so (rows of other splits, e.g. a corpus read in full, are only in ``full``). A split with
no rows is neither written nor declared (``datasets`` refuses to build an empty split, so a
declared one would make ``load_dataset(DEST, config)`` fail), and a config with no rows at
all (``degenerate`` of a clean run) is left out of the header and named in the card.

The card is plain text written here (no YAML library needed): provenance (the same table
as ``castillo report``), the schema with each column's meaning, the licence of each
source corpus and how to cite CASTILLO. Nothing is uploaded: ``huggingface-cli upload``
or ``git push`` of DEST is the user's step.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from castillo_formats.dest import ExportDest, ExportError

CONFIGS = ("sanitized", "original", "degenerate")
SPLITS = ("train", "validate", "test", "full")
MARKER = "<!-- written by `castillo export --format hf`; `--force` replaces only the files in .castillo-export -->"
SHARD_BYTES = 512 * 1024 * 1024
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
_SPLIT_ALIASES = {"val": "validate", "validation": "validate", "valid": "validate"}

#: Licences of CASTILLO v1's corpora (docs/corpora.md), for data imported without the corpus plugins.
KNOWN_LICENSES = {
    "Alpaca": "CC BY-NC 4.0",
    "DollyDataset": "CC BY-SA 3.0",
    "ShareGPT": "unclear (user-shared ChatGPT conversations, no licence stated)",
    "Mbpp": "CC BY 4.0",
    "Apps": "MIT",
    "DS1000": "CC BY-SA 4.0",
    "BigCodeBench": "Apache-2.0",
    "HumanEval": "MIT",
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
    "split": "train / validate / test / full",
    "backend": "inference backend",
    "model_revision": "resolved model revision where known",
    "n_samples": "N, completions kept",
    "max_new_tokens": "cap on generated tokens",
    "max_prompt_tokens": "prompt cap; longer prompts were truncated",
    "prompt_truncated": "the prompt was cut to max_prompt_tokens",
    "seed": "the prompt's seed; sample i used seed + i",
    "finish_reasons": "stop or length, per sample",
    "n_length_capped": "samples that hit the cap",
    "output_min": "shortest length",
    "output_max": "longest length",
    "config_hash": "hash of the cell's configuration",
    "castillo_version": "castillo version that wrote the row",
}

CITATION = """@misc{perezramirez2025castillo,
  title  = {CASTILLO: Characterizing Response Length Distributions of Large Language Models},
  author = {Perez-Ramirez, Daniel F. and Kostic, Dejan and Boman, Magnus},
  year   = {2025},
  eprint = {2505.16881},
  archivePrefix = {arXiv}
}"""


@dataclass
class HFExportSummary:
    """Rows per config and split, and the files written."""

    dest: Path
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _split_of(table: pa.Table) -> pa.Array:
    if "split" not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    column = table.column("split").combine_chunks()
    for alias, name in _SPLIT_ALIASES.items():
        column = pc.if_else(pc.equal(column, alias), name, column)
    return column


def shards(table: pa.Table, split: str) -> list[tuple[str, pa.Table]]:
    """One split as ``<split>-0000i-of-0000n.parquet`` files of at most about 512 MiB each."""
    count = max(1, math.ceil(table.nbytes / SHARD_BYTES))
    size = math.ceil(table.num_rows / count)
    return [(f"{split}-{i:05d}-of-{count:05d}.parquet", table.slice(i * size, size)) for i in range(count)]


def corpus_licenses(datasets: list[str]) -> dict[str, str]:
    """Each dataset's source licence: the installed corpus plugin's, else v1's known ones."""
    found: dict[str, str] = {}
    try:
        from castillo_core import get_plugins

        for entry in get_plugins().entries("corpus"):
            name, licence = getattr(entry.cls, "dataset", ""), getattr(entry.cls, "license", "")
            if name and licence and name not in found:
                found[name] = licence
    except Exception:  # noqa: BLE001 - a broken plugin must not stop an export; fall back to the table
        pass
    return {d: found.get(d) or KNOWN_LICENSES.get(d) or "unknown: check the source corpus" for d in datasets}


def _size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def card_yaml(license_id: str, title: str, rows: int, splits: dict[str, dict[str, int]]) -> list[str]:
    """The card's YAML header: licence, size, and every config with its non-empty splits."""
    lines = [
        "---",
        f"license: {license_id}",
        f"pretty_name: {_q(title)}",
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
    for config in CONFIGS:
        present = [split for split in SPLITS if splits[config][split]]
        if not present:
            continue
        lines.append(f"- config_name: {config}")
        if config == "sanitized":
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


def card_text(
    title: str,
    license_id: str,
    views: dict[str, pa.Table],
    summary: HFExportSummary,
    provenance: list[dict[str, Any]],
    detector: str,
    source: Path,
    version: str,
) -> str:
    """The README.md dataset card."""
    original = views["original"]
    total = original.num_rows
    counts = original.select(["model", "dataset"]).group_by(["model", "dataset"]).aggregate([([], "count_all")])
    per_cell = sorted(
        (((str(c["model"]), str(c["dataset"])), c["count_all"]) for c in counts.to_pylist()),
        key=lambda cell: cell[0],
    )
    datasets = sorted({key[1] for key, _ in per_cell})
    licences = corpus_licenses(datasets)
    lines = [*card_yaml(license_id, title, total, summary.rows), MARKER, "", f"# {title}", ""]
    lines += [
        f"Response-length distributions of LLMs, measured with [castillo](https://arxiv.org/abs/2505.16881) "
        f"{version}: for every ⟨prompt, model⟩ pair, N completions were drawn under fixed, recorded decoding "
        f"settings and their lengths counted with the model's own tokenizer. {total:,} rows, "
        f"{len({k[0] for k, _ in per_cell})} model(s) x {len(datasets)} dataset(s). The first columns are "
        "CASTILLO v1's, with v1's names and meanings, so this dataset concatenates with CASTILLO's.",
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("<this repository or directory>", "sanitized")  # or "original", "degenerate"',
        'train = ds["train"]',
        "```",
        "",
        "## Configs and splits",
        "",
        f"- `original`: every row, unchanged.\n- `degenerate`: the rows that the `{detector}` detector flags, "
        "unchanged.\n- `sanitized` (default): every row except those left with no usable sample; in a flagged "
        "row the offending lengths are removed, mean, std and percentiles recomputed, and `longest_response` "
        'set to "TEXT DEGENERATION" (CASTILLO v1\'s rule).',
        "",
        "`full` holds every row of a config; `train`, `validate` and `test` the rows of that split. "
        "A split or config with no rows (0 below) has no files and is not declared.",
        "",
        *_md_table(["config", *SPLITS], [[c, *(f"{summary.rows[c][s]:,}" for s in SPLITS)] for c in CONFIGS]),
        "",
        "## Rows per model and dataset (original)",
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
        "",
        "## Licences",
        "",
        f"This dataset: `{license_id}`. The prompts come from the source corpora below and keep their "
        "licences; the responses were generated by the models listed above and are subject to their terms.",
        "",
        *_md_table(["dataset", "source corpus licence"], [[d, licences[d]] for d in datasets]),
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def export_hf(
    out: str | Path,
    dest: str | Path,
    detector: str = "v1-length",
    cap: int | None = None,
    license_id: str = "cc-by-4.0",
    title: str = "castillo: response-length distributions of LLMs",
    force: bool = False,
) -> HFExportSummary:
    """Write the three views of ``out`` as a hub-ready dataset directory at ``dest``."""
    from castillo_views.provenance import provenance, read_manifest_dict, read_part_metadata
    from castillo_views.views import compute_views, flag_responses

    from castillo_core import __version__, read_table

    source, target = Path(out), Path(dest)
    if not _LICENSE_ID.fullmatch(license_id):
        raise ExportError(
            f"--license {license_id!r}: a licence id is letters, digits and . - + (e.g. cc-by-4.0, apache-2.0, other)"
        )
    prompts = read_table(source, "prompts")
    if prompts.num_rows == 0:
        raise ExportError(f"{source} holds no prompts rows; nothing to export")
    views, _ = compute_views(prompts, flag_responses(source, detector), detector, cap)
    tables = {name: views[name].prompts for name in CONFIGS}
    summary = HFExportSummary(dest=target)
    plan: list[tuple[str, pa.Table]] = []
    for config in CONFIGS:
        table = tables[config].replace_schema_metadata(None)
        splits = _split_of(table)
        summary.rows[config] = {}
        for split in SPLITS:  # fixed names: no path here comes from the data
            part = table if split == "full" else table.filter(pc.fill_null(pc.equal(splits, split), False))
            summary.rows[config][split] = part.num_rows
            if part.num_rows:
                plan += [(f"{config}/{name}", shard) for name, shard in shards(part, split)]
    files = ExportDest(target, "hf", force)
    files.prepare(["README.md", *(name for name, _ in plan)], directories=CONFIGS)
    for name, shard in plan:
        (target / name).parent.mkdir(exist_ok=True)
        pq.write_table(shard, target / name, compression="zstd", compression_level=3)
        summary.files.append(name)
    manifest = read_manifest_dict(source)
    prov = provenance(prompts, manifest, read_part_metadata(source))
    card = card_text(title, license_id, tables, summary, prov, detector, source, __version__)
    (target / "README.md").write_text(card, encoding="utf-8")
    summary.files.insert(0, "README.md")
    files.finish()
    return summary
