"""Corpora from the Hugging Face Hub: one exact file, or a config's splits through ``datasets``.

Every read starts with one call for the repository's info at the wanted revision (``main``
unless ``-C revision=`` pins one). It resolves the revision to a commit, lists the files and
carries the card's ``configs``, so a file, config or split the repository does not have is
refused before anything is downloaded, with one line naming the repository, the commit and
what it does have. The download then asks for that commit, so the file and the listing agree.

* With ``filename`` the exact file is downloaded (``huggingface_hub.hf_hub_download``, cached
  under ``HF_HOME``) and read like a local file, which keeps the record order v1 saw.
* Without it, ``datasets.load_dataset(repo, config, revision=commit)`` loads the config and the
  named splits are concatenated (with ``sort_key``, sorted by that field: MBPP's task ids).

When the Hub cannot be reached (no network, ``HF_HUB_OFFLINE=1``) the cached copy is used,
without the libraries' retries (half a minute of backoff for a file that is not cached): the
exact file from the hub cache, or ``datasets``' cached preparation. With nothing cached, one
line says so and how to pass the file with ``--source``.

``huggingface_hub`` and ``datasets`` are imported inside these functions only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from castillo_core import CorpusError
from castillo_corpora.readers import read_file

log = logging.getLogger(__name__)

INFO_TIMEOUT = 20.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_LISTED = 8


@dataclass(frozen=True)
class HubSource:
    """Where a corpus lives on the Hugging Face Hub (a dataset repository).

    ``filename``: one file of the repository, read like a local file. Otherwise
    ``config`` (``None``: the card's default) and ``splits`` are loaded with ``datasets``.
    ``revision``: a commit, branch or tag (``None``: ``main``).
    """

    repo: str
    filename: str | None = None
    config: str | None = None
    splits: tuple[str, ...] = ("train",)
    sort_key: str | None = None
    revision: str | None = None

    def at(self, revision: str | None) -> HubSource:
        return replace(self, revision=revision) if revision else self

    def where(self) -> str:
        """The repository (and revision, when pinned) for messages."""
        return f"{self.repo}@{self.revision}" if self.revision else self.repo

    def label(self) -> str:
        what = f"/{self.filename}" if self.filename else ""
        return f"hub:{self.where()}{what}"

    def describe(self) -> str:
        """What is read, as docs/corpora.md states it."""
        if self.filename:
            return f"file {self.filename}"
        splits = f"split{'s' if len(self.splits) > 1 else ''} {', '.join(self.splits)}"
        return f"config {self.config}, {splits}" if self.config else splits


class _Hints:
    """What to pass instead, for a CASTILLO corpus (``--source``) or the generic ``hf`` corpus (``-C``)."""

    def __init__(self, hub: HubSource, corpus: str, generic: bool) -> None:
        self.hub, self.corpus, self.generic = hub, corpus, generic

    def fallback(self) -> str:
        """What to pass instead of the hub source (never starts with "or")."""
        if self.generic:
            return "pass a local copy as --source FILE (json, jsonl or parquet, optionally .gz)"
        if self.hub.filename:
            return (
                f"download {self.hub.filename} from {self.hub.repo} once and pass it with --source "
                "(json, jsonl or parquet, optionally .gz, or a directory of v1 split files)"
            )
        return (
            f"save {self.hub.repo}'s {self.hub.describe()} once as a json, jsonl or parquet file and pass it "
            "with --source (or a directory of v1 split files)"
        )


def _endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except Exception:  # noqa: BLE001 - only for a message
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _short(exc: BaseException, limit: int = 160) -> str:
    """An upstream error in one short line (hub errors can run to paragraphs)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else "") if names else "nothing"


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


def _missing_library(hub: HubSource, corpus: str, library: str, hints: _Hints) -> CorpusError:
    return CorpusError(
        f"corpus {corpus}: no --source given and the optional {library} library is not installed; "
        f"pip install 'castillo-corpora[hub]' (or: pip install 'castillo[hub]'), or {hints.fallback()}"
    )


def load_hub(hub: HubSource, corpus: str, generic: bool = False) -> list[Any]:
    """Records of a corpus from the Hugging Face Hub (see the module docstring)."""
    hints = _Hints(hub, corpus, generic)
    if hub.filename is None:
        try:
            import datasets  # noqa: F401 - checked before any network call
        except ImportError:
            raise _missing_library(hub, corpus, "datasets", hints) from None
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise _missing_library(hub, corpus, "huggingface_hub", hints) from None
    try:
        info = HfApi().dataset_info(hub.repo, revision=hub.revision, timeout=INFO_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - sorted below; anything unexpected is one line too
        problem = _refused(exc, hub, corpus, hints)
        if problem is not None:
            raise problem from None
        return _from_cache(hub, corpus, hints, exc)
    commit = str(info.sha or hub.revision or "main")
    where = f"the hub dataset {hub.where()} (commit {commit[:12]})"
    if hub.filename:
        files = sorted(s.rfilename for s in info.siblings or [])
        if hub.filename not in files:
            pass_instead = "pass -C data_file=NAME with one of them, or " if generic else ""
            raise CorpusError(
                f"corpus {corpus}: {where} has no file {hub.filename} (it has: {_listed(files)}); "
                f"{pass_instead}{hints.fallback()}"
            )
        records = _download(hub, corpus, hints)
    else:
        config = _check_config(hub, info, corpus, where, hints)
        records = _load_dataset(replace(hub, config=config), commit, corpus, where, hints)
    log.info("corpus %s: %d records from %s at commit %s", corpus, len(records), hub.label(), commit)
    return records


def _refused(exc: Exception, hub: HubSource, corpus: str, hints: _Hints) -> CorpusError | None:
    """A definite answer of the Hub (no such repository or revision, no access) as one line;
    ``None`` for a network problem (the cache may still serve)."""
    try:
        from huggingface_hub import errors
    except ImportError:  # huggingface_hub < 0.24 kept them in utils
        from huggingface_hub import utils as errors

    if isinstance(exc, getattr(errors, "OfflineModeIsEnabled", ())):
        return None
    at = f" at {_endpoint()}"
    if isinstance(exc, errors.RevisionNotFoundError):
        option = "-C revision=" if hub.revision else "a revision"
        return CorpusError(
            f"corpus {corpus}: the hub dataset {hub.repo}{at} has no revision {hub.revision!r}; "
            f"pass {option} with a commit, branch or tag that exists, or {hints.fallback()}"
        )
    if isinstance(exc, errors.GatedRepoError):
        return CorpusError(
            f"corpus {corpus}: the hub dataset {hub.repo}{at} is gated; accept its terms on the Hub and set HF_TOKEN, "
            f"or {hints.fallback()}"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        check = "check --source ORG/NAME" if hints.generic else "the corpus's repository moved or was renamed"
        return CorpusError(
            f"corpus {corpus}: there is no dataset {hub.repo} on the Hugging Face Hub{at} (or it is private and "
            f"HF_TOKEN is not set); {check}, or {hints.fallback()}"
        )
    if isinstance(exc, errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status is not None and status < 500 and status not in (408, 429):
            return CorpusError(f"corpus {corpus}: the Hub refused {hub.label()} ({_short(exc)}); {hints.fallback()}")
    return None


def _unreachable(hub: HubSource, corpus: str, hints: _Hints, exc: BaseException) -> CorpusError:
    if _offline_env() or type(exc).__name__ == "OfflineModeIsEnabled":
        why = "the Hub is switched off here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)"
    else:
        why = f"the Hugging Face Hub at {_endpoint()} is unreachable ({_short(exc, 100)})"
    return CorpusError(f"corpus {corpus}: {why} and {hub.label()[4:]} is not in the cache; {hints.fallback()}")


def _from_cache(hub: HubSource, corpus: str, hints: _Hints, exc: BaseException) -> list[Any]:
    """The cached copy of what ``hub`` names, read without touching the network."""
    if hub.filename:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub.repo, hub.filename, revision=hub.revision, repo_type="dataset")
        if not isinstance(cached, str):
            raise _unreachable(hub, corpus, hints, exc)
        log.warning("corpus %s: the Hub is unreachable (%s); reading the cached %s", corpus, _short(exc, 80), cached)
        return read_file(Path(cached), corpus)
    with _libraries_offline():
        try:
            records = _splits(hub, hub.revision, corpus, f"the hub dataset {hub.where()} (cached)", hints)
        except CorpusError:
            raise
        except Exception:  # noqa: BLE001 - nothing usable cached: say the Hub is unreachable
            raise _unreachable(hub, corpus, hints, exc) from None
    log.warning("corpus %s: the Hub is unreachable (%s); read %s from the cache", corpus, _short(exc, 80), hub.label())
    return records


@contextmanager
def _libraries_offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` for this process's libraries while the cache is read.

    The libraries read the variable once, at import; their own test suites switch it the
    same way. Offline, ``datasets`` goes straight to its cache instead of retrying each file
    with backoff.
    """
    import datasets.config
    from huggingface_hub import constants

    switches = [
        (module, name)
        for module, names in (
            (datasets.config, ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
            (constants, ("HF_HUB_OFFLINE",)),
        )
        for name in names
        if hasattr(module, name)
    ]
    saved = [getattr(module, name) for module, name in switches]
    for module, name in switches:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(switches, saved, strict=True):
            setattr(module, name, value)


def _download(hub: HubSource, corpus: str, hints: _Hints) -> list[Any]:
    """The file at the revision asked for (``main`` by default), so the cache's ref is kept for an offline run."""
    from huggingface_hub import hf_hub_download

    assert hub.filename is not None
    try:
        local = hf_hub_download(repo_id=hub.repo, filename=hub.filename, repo_type="dataset", revision=hub.revision)
    except Exception as exc:  # noqa: BLE001 - one clear line for any failure between the info and the file
        raise CorpusError(
            f"corpus {corpus}: could not download {hub.label()[4:]} ({_short(exc)}); {hints.fallback()}"
        ) from None
    return read_file(Path(local), corpus)


def card_configs(card_data: Any) -> dict[str, list[str]] | None:
    """The configs a dataset card declares, each with its splits (``None``: the card declares none)."""
    data = card_data.to_dict() if hasattr(card_data, "to_dict") else card_data
    configs = data.get("configs") if isinstance(data, Mapping) else None
    if not isinstance(configs, list):
        return None
    out: dict[str, list[str]] = {}
    for entry in configs:
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("config_name", "default"))
        files = entry.get("data_files")
        if isinstance(files, list) and files and all(isinstance(f, Mapping) for f in files):
            out[name] = [str(f.get("split", "train")) for f in files]
        else:
            out[name] = ["train"]
    return out


def chosen_config(card_data: Any, wanted: str | None) -> str | None:
    """The config ``datasets`` loads for ``wanted`` (``None``: the card's default, ``default``, or the only one)."""
    if wanted is not None:
        return wanted
    data = card_data.to_dict() if hasattr(card_data, "to_dict") else card_data
    configs = (data or {}).get("configs") or []
    for entry in configs:
        if isinstance(entry, Mapping) and entry.get("default"):
            return str(entry.get("config_name", "default"))
    names = [str(e.get("config_name", "default")) for e in configs if isinstance(e, Mapping)]
    if "default" in names:
        return "default"
    return names[0] if len(names) == 1 else None


def _check_config(hub: HubSource, info: Any, corpus: str, where: str, hints: _Hints) -> str | None:
    """The config to load, checked with its splits against the card (when the card declares configs)."""
    configs = card_configs(info.card_data)
    if not configs:
        return hub.config
    config = chosen_config(info.card_data, hub.config)
    if config is None or config not in configs:
        named = f"no config {hub.config}" if hub.config else "no default config"
        option = "pass -C config=NAME with one of them" if hints.generic else hints.fallback()
        raise CorpusError(f"corpus {corpus}: {where} has {named} (configs: {_listed(list(configs))}); {option}")
    missing = [s for s in hub.splits if s not in configs[config]]
    if missing:
        raise _no_split(hub, corpus, f"{where}, config {config},", missing[0], configs[config], hints)
    return config


def _no_split(
    hub: HubSource, corpus: str, where: str, split: str, present: Sequence[str], hints: _Hints
) -> CorpusError:
    if hints.generic:
        option = " or ".join(f"-C hf_split={s}" for s in list(present)[:3]) or "-C hf_split=NAME"
        instead = f"pass {option}"
    else:
        instead = hints.fallback()
    return CorpusError(f"corpus {corpus}: {where} has no split {split} (it has: {_listed(list(present))}); {instead}")


def _load_dataset(hub: HubSource, commit: str, corpus: str, where: str, hints: _Hints) -> list[Any]:
    try:
        return _splits(hub, commit, corpus, where, hints)
    except CorpusError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad config, no data files, a broken file: one clear line
        raise CorpusError(
            f"corpus {corpus}: could not load {where} with datasets ({_short(exc)}); {hints.fallback()}"
        ) from None


def _splits(hub: HubSource, revision: str | None, corpus: str, where: str, hints: _Hints) -> list[Any]:
    import datasets

    loaded = datasets.load_dataset(hub.repo, hub.config, revision=revision)
    records: list[Any] = []
    for split in hub.splits:
        if split not in loaded:
            config = f", config {hub.config}," if hub.config else ""
            raise _no_split(hub, corpus, f"{where}{config}", split, list(loaded), hints)
        records.extend(dict(row) for row in loaded[split])
    if hub.sort_key:
        key = hub.sort_key
        records.sort(key=lambda r: r.get(key) if isinstance(r, dict) else 0)
    return records
