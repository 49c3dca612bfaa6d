"""Opening a model: where it comes from, which dtype and device, and what was resolved.

Imported only from ``TransformersBackend.open`` (it imports torch and transformers).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from castillo_core import BackendError, ConfigError

log = logging.getLogger(__name__)

DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Source:
    """Where the weights live: a hub id or local directory, and an optional GGUF file in it."""

    location: str
    gguf_file: str | None
    local: bool


def resolve_source(model: str, gguf_file: str | None) -> Source:
    """Split ``model`` into a directory (or hub id) and a GGUF file name, if any."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(
                f"backend transformers: model {model} is a file but not a .gguf file; "
                "pass a model directory, a hub id or a .gguf file"
            )
        return Source(str(path.parent.resolve()), path.name, True)
    if path.is_dir():
        if gguf_file and not (path / gguf_file).is_file():
            raise ConfigError(f"backend transformers: option gguf_file: {gguf_file} is not in {path}")
        return Source(str(path.resolve()), gguf_file, True)
    if model.startswith((".", "/", "~")) or os.sep + os.sep in model:
        raise ConfigError(f"backend transformers: model path {model} does not exist")
    return Source(model, gguf_file, False)


def resolve_dtype(requested: str | None, config: Any, device: str) -> torch.dtype:
    """``auto`` (or nothing) takes the checkpoint's dtype; fp16 on a CPU becomes fp32 (CPUs lack fp16 math)."""
    if requested and requested.lower() != "auto":
        try:
            return DTYPES[requested.lower()]
        except KeyError:
            raise ConfigError(
                f"backend transformers: dtype {requested!r} is not one of auto, bf16, fp16, fp32"
            ) from None
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = DTYPES.get(stored.replace("torch.", ""), None)
    if stored not in DTYPE_NAMES:
        return torch.float32
    if stored == torch.float16 and device == "cpu":
        return torch.float32
    return stored


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"backend transformers: option device={requested} but CUDA is not available here; "
            "use device=cpu or device=auto"
        )
    return requested


def fingerprint(source: Source) -> str:
    """A revision for local weights: a hash of the GGUF file, or of the directory's file names and sizes."""
    root = Path(source.location)
    digest = hashlib.sha256()
    if source.gguf_file:
        with open(root / source.gguf_file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        return f"gguf-sha256:{digest.hexdigest()[:16]}"
    for item in sorted(root.iterdir()):
        if item.is_file():
            digest.update(f"{item.name}:{item.stat().st_size};".encode())
            if item.suffix == ".json" and item.stat().st_size < 1 << 20:
                digest.update(item.read_bytes())
    return f"local:{digest.hexdigest()[:16]}"


def load(
    source: Source,
    revision: str | None,
    dtype: str | None,
    device: str,
    trust_remote_code: bool,
    attn_implementation: str | None,
) -> tuple[Any, Any, torch.dtype, str]:
    """Load tokenizer and model; returns ``(model, tokenizer, dtype, resolved revision)``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        common["revision"] = revision
    if source.gguf_file:
        common["gguf_file"] = source.gguf_file
    try:
        config = AutoConfig.from_pretrained(source.location, **common)
        tokenizer = AutoTokenizer.from_pretrained(source.location, **common)
        torch_dtype = resolve_dtype(dtype, config, device)
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=torch_dtype, attn_implementation=attn_implementation or "sdpa", **common
        )
    except (OSError, ValueError) as exc:
        hint = "" if source.local else " (offline? set HF_HUB_OFFLINE=0, or pass a local directory)"
        raise BackendError(
            f"backend transformers: could not load {source.location}"
            f"{' file ' + source.gguf_file if source.gguf_file else ''}: {exc}{hint}"
        ) from exc
    model.to(device)
    model.eval()
    resolved = getattr(model.config, "_commit_hash", None) or getattr(config, "_commit_hash", None)
    if source.local or not resolved:
        resolved = fingerprint(source) if source.local else (revision or "unknown")
    return model, tokenizer, torch_dtype, resolved


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a completion: generation_config's eos ids (possibly several), else the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids:
        raise BackendError(
            "backend transformers: the model has no end token (no eos_token_id in its "
            "generation_config, config or tokenizer); completions could never stop"
        )
    return sorted({int(i) for i in ids})


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (cuda)"
    return f"cpu ({torch.get_num_threads()} threads)"
