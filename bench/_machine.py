"""What a benchmark ran on: cores, CPU model and flags, load average; shared by the bench scripts.

Every benchmark prints :func:`machine_line` before it measures and :func:`load_line` after, so a
figure in docs/benchmarks.md carries the CPU it was taken on (AVX2 or AVX-512 changes llama.cpp's
and torch's kernels) and how busy the shared machine was.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_info() -> dict[str, object]:
    """The CPU model name and the vector flags that change kernel choice (from /proc/cpuinfo)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return {
        "model": model or platform.processor() or "unknown CPU",
        "cores": os.cpu_count() or 1,
        "usable": usable,
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
    }


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def machine_line() -> str:
    """One line: cores, CPU model, avx2/avx512f/avx512_bf16, load average (1, 5, 15 min)."""
    info = cpu_info()
    flags = ", ".join(f"{name} {'yes' if info[name] else 'no'}" for name in ("avx2", "avx512f", "avx512_bf16"))
    return (
        f"machine: {info['cores']} cores ({info['usable']} usable), {info['model']}; {flags}; "
        f"load average before: {load()}"
    )


def load_line() -> str:
    return f"load average after: {load()}"
