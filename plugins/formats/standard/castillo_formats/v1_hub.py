"""CASTILLO v1 from the Hugging Face Hub: ``castillo import castillo-v1 danfperam/castillo OUT``.

The published dataset's card declares its configs (``sanitized``, the default, ``original``,
``degenerate``) with one JSON file per split (``original/original_<split>.json``). castillo
imports the ``original`` config, v1's rows as measured (``castillo sanitize`` derives the
views again), and only the splits asked for: the card is read first, then only those files are
downloaded (``huggingface_hub.hf_hub_download``, cached under ``HF_HOME``), so importing the test
split fetches the test split's file and nothing else. Each file's rows go through the same
checks as a local v1 file; the split comes from the card.

With the Hub unreachable, the files of an earlier download are read from the cache.
``huggingface_hub`` is imported inside these functions only.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from castillo_formats.v1_import import V1File, V1ImportError, read_file

log = logging.getLogger(__name__)

V1_HUB_ID = "danfperam/castillo"
"""CASTILLO v1's public dataset id on the Hugging Face Hub."""
CONFIG = "original"
SPLITS = ("train", "validate", "test")
_HUB_ID = re.compile(r"^(?:hf://datasets/)?(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*?)(?:@(?P<rev>[\w./-]+))?/?$")
_TIMEOUT = 30.0


def hub_id(path: str) -> tuple[str, str | None] | None:
    """``(repo, revision)`` when ``path`` names a Hub dataset (``ORG/NAME``, ``hf://datasets/ORG/NAME[@rev]``)
    and no local path of that name exists; else None."""
    if Path(path).expanduser().exists():
        return None
    match = _HUB_ID.match(path)
    return (match.group("repo"), match.group("rev")) if match else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def _data_files(card: Mapping[str, Any], repo: str) -> dict[str, list[str]]:
    """The ``original`` config's file patterns per split, from the card's ``configs``."""
    for entry in card.get("configs") or []:
        if isinstance(entry, Mapping) and entry.get("config_name") == CONFIG:
            files = entry.get("data_files") or []
            out: dict[str, list[str]] = {}
            for item in files if isinstance(files, list) else []:
                if isinstance(item, Mapping) and item.get("split") in SPLITS:
                    paths = item.get("path")
                    out[str(item["split"])] = [paths] if isinstance(paths, str) else list(paths or [])
            return out
    raise V1ImportError(
        f"the Hub dataset {repo} declares no config {CONFIG!r} in its card; it is not CASTILLO v1's layout "
        f"(pass {V1_HUB_ID}, or a local directory of v1's preproc_*.json files)"
    )


def _card(path: str) -> dict[str, Any]:
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def hub_files(repo: str, revision: str | None, splits: tuple[str, ...]) -> tuple[list[V1File], str]:
    """Download (or read from the cache) and check the v1 files of ``splits``; the files and their origin."""
    try:
        from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise V1ImportError(
            f"importing {repo} from the Hugging Face Hub needs huggingface_hub: pip install 'castillo[hub]', "
            "or download the dataset's JSON files once and pass their directory"
        ) from None
    try:
        from huggingface_hub import errors
    except ImportError:  # huggingface_hub < 0.24 kept them in utils
        from huggingface_hub import utils as errors
    siblings: list[str] | None = None
    commit = revision or "main"
    try:
        info = HfApi().dataset_info(repo, revision=revision, timeout=_TIMEOUT)
        siblings, commit = sorted(s.rfilename for s in info.siblings or []), str(info.sha)
        card_path = hf_hub_download(repo, "README.md", repo_type="dataset", revision=revision)
    except errors.RevisionNotFoundError:
        raise V1ImportError(
            f"the Hub dataset {repo} has no revision {revision!r}; pass --revision with one that exists"
        ) from None
    except errors.EntryNotFoundError:
        raise V1ImportError(
            f"the Hub dataset {repo} has no card (README.md) declaring its files; it is not CASTILLO v1's layout "
            f"(pass {V1_HUB_ID}, or a local directory of v1's preproc_*.json files)"
        ) from None
    except errors.RepositoryNotFoundError:
        raise V1ImportError(
            f"there is no dataset {repo} on the Hugging Face Hub (or it is private and HF_TOKEN is not set) and no "
            f"local path of that name; CASTILLO v1 is {V1_HUB_ID}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the network: an earlier download may be cached
        cached = try_to_load_from_cache(repo, "README.md", revision=revision, repo_type="dataset")
        if not isinstance(cached, str):
            raise V1ImportError(
                f"could not reach the Hugging Face Hub for {repo} ({_short(exc)}) and nothing of it is cached; "
                "try again online, or download its JSON files once and pass their directory"
            ) from None
        log.warning("the Hub is unreachable (%s); importing %s from the cache", _short(exc), repo)
        card_path = cached
    patterns = _data_files(_card(card_path), repo)
    missing = [s for s in splits if s not in patterns]
    if missing:
        raise V1ImportError(
            f"the Hub dataset {repo} (config {CONFIG}) has no split {missing[0]} (it has: "
            f"{', '.join(patterns) or 'none'}); pass --split with one of them, or --split all"
        )
    files: list[V1File] = []
    for split in splits:
        names = _resolve(patterns[split], siblings, repo)
        for name in names:
            local = _fetch(repo, name, revision, siblings is None)
            files.append(read_file(local, split=split, origin=f"hf://datasets/{repo}@{commit}/{name}"))
    return files, f"hf://datasets/{repo}@{commit}"


def _resolve(patterns: list[str], siblings: list[str] | None, repo: str) -> list[str]:
    """The repository files a split's patterns name (globs expanded against the listing)."""
    if siblings is None:  # offline: only literal names can be looked up in the cache
        return [p for p in patterns if not any(c in p for c in "*?[")]
    names = sorted({f for p in patterns for f in siblings if fnmatch.fnmatchcase(f, p)})
    if not names:
        raise V1ImportError(
            f"the Hub dataset {repo} lists no file matching {', '.join(patterns)}; its card and files disagree"
        )
    return names


def _fetch(repo: str, name: str, revision: str | None, offline: bool) -> str:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if offline:
        cached = try_to_load_from_cache(repo, name, revision=revision, repo_type="dataset")
        if not isinstance(cached, str):
            raise V1ImportError(f"the Hub is unreachable and {repo}/{name} is not in the cache; try again online")
        return cached
    try:
        return str(hf_hub_download(repo, name, repo_type="dataset", revision=revision))
    except Exception as exc:  # noqa: BLE001 - one line for any failure
        raise V1ImportError(f"could not download {repo}/{name} from the Hub ({_short(exc)}); try again") from None
