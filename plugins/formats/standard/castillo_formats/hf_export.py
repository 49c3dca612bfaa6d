"""``castillo export OUT --format hf DEST``: a Hugging Face dataset directory, optionally pushed to the Hub.

::

    DEST/README.md                                   the dataset card (hf_card.py)
    DEST/original/<split>-00000-of-0000n.parquet     every row as measured: the default config
    DEST/sanitized-<detector>/<split>-...parquet     v1's sanitized view under that detector
    DEST/degenerate-<detector>/<split>-...parquet    the rows that detector flags
    DEST/responses/<split>-...parquet                one row per completion (when the output has them)
    DEST/.castillo-export                            what the export wrote (``--force`` replaces only that)

The default config is the data unchanged. Derived views carry their detector in their name, so
nobody loads numbers a rule changed without asking for that rule; they come from
:func:`castillo_views.views.compute_views`, the code of ``castillo sanitize``. v1's length rule
counts every sample that reached the cap as degenerate, which describes degeneration only
under a generous cap (v1's 15,000 tokens): under a cap below :data:`V1_RULE_MIN_CAP` the export
warns, on the terminal and in the card.

Splits are the rows' own: ``train``, ``validate``, ``test``, ``full`` (a corpus read whole) and
``other`` (no split, or another name); each row is in exactly one. A split with no rows is
neither written nor declared (``datasets`` refuses to build an empty split). Every directory
and file name here is fixed or a checked detector name: nothing from the data becomes a path.

``--push-to-hub ORG/NAME`` uploads DEST with ``huggingface_hub`` (``create_repo`` then one
``upload_folder`` commit, ``.castillo-export`` left out, Parquet files of an earlier push that
this export does not have deleted in the same commit).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from castillo_formats.dest import RECORD, ExportDest, ExportError
from castillo_formats.hf_card import REPO_PLACEHOLDER, card_text

DEFAULT_CONFIG = "original"
RESPONSES_CONFIG = "responses"
VIEWS = ("sanitized", "degenerate")
SPLITS = ("train", "validate", "test", "full", "other")
SHARD_BYTES = 512 * 1024 * 1024
V1_RULE_MIN_CAP = 4096
"""Below this cap, v1's length rule (``v1-length``) flags sound answers that merely reached the cap."""
_LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
_DETECTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPLIT_ALIASES = {"val": "validate", "validation": "validate", "valid": "validate", "dev": "validate"}


@dataclass
class HFExportSummary:
    """Rows per config and split, the files written, what the user should know, and the push."""

    dest: Path
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pushed: str | None = None


def view_config(view: str, detector: str) -> str:
    """The config name of a derived view: the view and its detector (``sanitized-v1-length``)."""
    return f"{view}-{detector}"


def export_splits(table: pa.Table) -> pa.Array:
    """Each row's export split: its own when train/validate/test/full (aliases folded), else ``other``."""
    if "split" not in table.column_names:
        return pa.array(["other"] * table.num_rows, pa.string())
    column = table.column("split").combine_chunks().cast(pa.string())
    for alias, name in _SPLIT_ALIASES.items():
        column = pc.if_else(pc.equal(column, alias), name, column)
    named = pc.fill_null(pc.is_in(column, value_set=pa.array(SPLITS[:4])), False)
    return pc.if_else(named, column, "other")


def shards(table: pa.Table, split: str) -> list[tuple[str, pa.Table]]:
    """One split as ``<split>-0000i-of-0000n.parquet`` files of at most about 512 MiB each."""
    count = max(1, math.ceil(table.nbytes / SHARD_BYTES))
    size = math.ceil(table.num_rows / count)
    return [(f"{split}-{i:05d}-of-{count:05d}.parquet", table.slice(i * size, size)) for i in range(count)]


def v1_rule_warning(prompts: pa.Table, flagged: int, cap: int | None) -> str | None:
    """Why ``v1-length`` means little for this output, when its cap is far below v1's (else None)."""
    from castillo_core import V1_MAX_NEW_TOKENS

    if cap is not None:
        caps = [cap]
    elif "max_new_tokens" in prompts.column_names:
        caps = [c for c in pc.unique(prompts.column("max_new_tokens")).to_pylist() if c is not None]
    else:
        caps = []
    low = sorted(c for c in caps if c < V1_RULE_MIN_CAP)
    if not low:
        return None
    shown = ", ".join(f"{c:,}" for c in low)
    return (
        f"The v1-length rule counts every sample that reaches the cap as degenerate, and this output's cap is "
        f"{shown} token(s), far below v1's {V1_MAX_NEW_TOKENS:,}, so it mostly marks answers cut by the cap "
        f"(here it flags {flagged:,} of {prompts.num_rows:,} rows). `{DEFAULT_CONFIG}` is unchanged; "
        f"`{view_config('sanitized', 'v1-length')}` and `{view_config('degenerate', 'v1-length')}` describe the cap, "
        "not degeneration (--detector repetition judges the texts)."
    )


def _check(license_id: str, detectors: list[str], repo_id: str | None) -> None:
    if not _LICENSE_ID.fullmatch(license_id):
        raise ExportError(
            f"--license {license_id!r}: a licence id is letters, digits and . - + (e.g. cc-by-4.0, apache-2.0, other)"
        )
    for detector in detectors:
        if not _DETECTOR.fullmatch(detector):
            raise ExportError(
                f"--detector {detector!r}: a detector name is letters, digits and _ . - (e.g. v1-length, repetition)"
            )
    if len(set(detectors)) != len(detectors):
        raise ExportError(f"--detector names {', '.join(detectors)}: each detector once")
    if repo_id is not None and not _REPO_ID.fullmatch(repo_id):
        raise ExportError(f"--push-to-hub {repo_id!r}: a Hub dataset id is ORG/NAME (letters, digits, _ . -)")


def export_hf(
    out: str | Path,
    dest: str | Path,
    detectors: list[str] | tuple[str, ...] = ("v1-length",),
    cap: int | None = None,
    license_id: str = "cc-by-4.0",
    title: str = "castillo: response-length distributions of LLMs",
    force: bool = False,
    repo_id: str | None = None,
) -> HFExportSummary:
    """Write ``out`` as a Hub-ready dataset directory at ``dest`` (``repo_id``: the id the card's code loads)."""
    from castillo_views.provenance import provenance, read_manifest_dict, read_part_metadata
    from castillo_views.views import compute_views, flag_responses

    from castillo_core import V1_DETECTOR, __version__, read_table

    source, target = Path(out), Path(dest)
    detectors = list(detectors)
    _check(license_id, detectors, repo_id)
    prompts = read_table(source, "prompts")
    if prompts.num_rows == 0:
        raise ExportError(f"{source} holds no prompts rows; nothing to export")
    summary = HFExportSummary(dest=target)
    tables: dict[str, pa.Table] = {DEFAULT_CONFIG: prompts}
    views: dict[str, tuple[str, str]] = {}
    for detector in detectors:
        computed, flags = compute_views(prompts, flag_responses(source, detector), detector, cap)
        for view in VIEWS:
            tables[view_config(view, detector)] = computed[view].prompts
            views[view_config(view, detector)] = (view, detector)
        if detector == V1_DETECTOR:
            warning = v1_rule_warning(prompts, int(flags.degenerate.sum()), cap)
            if warning:
                summary.warnings.append(warning)
    responses = read_table(source, "responses") if (source / "responses").exists() else None
    if responses is not None and responses.num_rows:
        tables[RESPONSES_CONFIG] = responses
    plan: list[tuple[str, pa.Table]] = []
    for config, table in tables.items():
        table = table.replace_schema_metadata(None)
        splits = export_splits(table)
        summary.rows[config] = {}
        for split in SPLITS:  # fixed names: no path here comes from the data
            part = table.filter(pc.equal(splits, split))
            summary.rows[config][split] = part.num_rows
            if part.num_rows:
                plan += [(f"{config}/{name}", shard) for name, shard in shards(part, split)]
    files = ExportDest(target, "hf", force)
    files.prepare(["README.md", *(name for name, _ in plan)], directories=list(tables))
    for name, shard in plan:
        (target / name).parent.mkdir(exist_ok=True)
        pq.write_table(shard, target / name, compression="zstd", compression_level=3)
        summary.files.append(name)
    manifest = read_manifest_dict(source)
    card = card_text(
        title=title,
        license_id=license_id,
        repo=repo_id or REPO_PLACEHOLDER,
        original=prompts.replace_schema_metadata(None),
        responses=tables.get(RESPONSES_CONFIG),
        rows=summary.rows,
        views=views,
        default=DEFAULT_CONFIG,
        provenance=provenance(prompts, manifest, read_part_metadata(source)),
        warnings=summary.warnings,
        source=source,
        version=__version__,
    )
    (target / "README.md").write_text(card, encoding="utf-8")
    summary.files.insert(0, "README.md")
    files.finish()
    return summary


def push_to_hub(dest: Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Upload an export to the Hub dataset ``repo_id`` (created if needed) in one commit; its URL.

    Parquet files already in the repository that this export does not have (an earlier push with
    more shards or other configs) are deleted by the same commit, so the card's globs match this
    export's rows only. The token is huggingface_hub's (``HF_TOKEN`` or ``hf auth login``).
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ExportError(
            "--push-to-hub needs huggingface_hub: pip install 'castillo[hub]' (the export itself is written at "
            f"{dest}; `hf upload {repo_id} {dest} --repo-type dataset` pushes it too)"
        ) from None
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(dest),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message or "castillo export --format hf",
            ignore_patterns=[RECORD],
            delete_patterns=["*.parquet"],
        )
    except Exception as exc:  # noqa: BLE001 - no token, no network, no permission: one line, the export is kept
        text = " ".join(str(exc).split())[:200]
        raise ExportError(
            f"could not push {dest} to the Hub dataset {repo_id} ({type(exc).__name__}: {text}); the export is "
            "written: check HF_TOKEN (or `hf auth login`) and the network, then run the same command again "
            "with --force"
        ) from None
    return str(getattr(commit, "commit_url", None) or commit)
