"""Build the GPU kit's wheelhouse: what bench/gpu/run.sh installs on the GPU machine, which has no network.

    make gpu-kit                                  # = python bench/gpu/prepare.py --out .gpu-kit
    python bench/gpu/prepare.py --no-download     # castillo's own wheels only (tests)

Into ``<out>/wheels`` (``.gpu-kit/`` is git-ignored; the ``run`` tool carries it), with exact
versions, those of this environment, so that the GPU machine runs what was tested here:

- castillo and castillo-transformers, built here with ``python -m build --no-isolation`` (an
  sdist, then the wheel from it: what ``make dist`` does), sdists removed;
- what castillo_core needs and the GPU machine lacks: pydantic, pydantic-core (the CPython
  3.12 manylinux x86_64 wheel), annotated-types, typing-inspection, and typing-extensions
  (there, but pydantic needs a newer one than torch asked for);
- transformers: the machine has 5.17, whose models take ``past_key_values=``; the
  transformers backend's decode loop passes ``cache=``, the name of newer 5.x releases
  (5.17 and 5.19 lack it; 5.24 has it). Its own dependencies are all there.

``requirements.txt`` beside the wheels pins each (``name==version``); run.sh installs them
with ``pip install --no-index --find-links <wheels> --no-deps --target <dir>``. The working
tree travels with every ``run`` call too, 64 MiB in all: the script prints the sum and fails
when the wheels and the tree are over it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
LIMIT_BYTES = 64 * 2**20  # what one `run` call carries: working tree + carried paths
GPU_PYTHON = "3.12"
GPU_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# The markers of the GPU machine's Python, for reading requirements as pip would there.
GPU_MARKERS = {
    "python_version": GPU_PYTHON,
    "python_full_version": GPU_PYTHON + ".3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}

# castillo's distributions the kit needs, and their source directories.
CASTILLO = {"castillo": REPO, "castillo-transformers": REPO / "plugins/backends/transformers"}
# Third-party wheels carried, and why.
CARRIED = {
    "pydantic": "castillo_core's records; not on the GPU machine",
    "pydantic-core": "pydantic's compiled core (cp312 manylinux x86_64); not on the GPU machine",
    "annotated-types": "pydantic needs it; not on the GPU machine",
    "typing-inspection": "pydantic needs it; not on the GPU machine",
    "typing-extensions": "pydantic needs a newer one than torch's (>= 4.16)",
    "transformers": "the machine's 5.17 takes past_key_values=, the backend passes cache= (newer 5.x)",
}
# Python packages of the GPU machine's image ('cuda'), read on 2026-11-17
# (/work/.library/device/KINDS.md): what need not travel.
GPU_HAS = frozenset(
    """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split()
)


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Item:
    """One wheel of the wheelhouse."""

    name: str
    version: str
    built: bool  # built here from the source tree (else downloaded)
    reason: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def castillo_version() -> str:
    return (REPO / "VERSION").read_text().strip()


def plan(download: bool = True) -> list[Item]:
    """The wheels to carry, at the versions this environment runs."""
    items = [Item(name, castillo_version(), True, "castillo, built here") for name in CASTILLO]
    if download:
        items += [Item(name, version(name), False, reason) for name, reason in CARRIED.items()]
    return items


def _requirements(name: str) -> list[tuple[str, str]]:
    """``(requirement name, the requirement)`` of installed ``name`` that apply on the GPU machine (no extras)."""
    from packaging.requirements import Requirement

    found = []
    for text in requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(GPU_MARKERS):
            found.append((normalize(requirement.name), str(requirement)))
    return found


def uncovered() -> list[str]:
    """What castillo and castillo-transformers need, through the carried wheels, that neither travels nor is there."""
    carried = {normalize(name) for name in [*CASTILLO, *CARRIED]}
    missing, todo, seen = [], list(CASTILLO), set()
    while todo:
        name = todo.pop()
        if normalize(name) in seen:
            continue
        seen.add(normalize(name))
        try:
            needs = _requirements(name)
        except PackageNotFoundError:
            missing.append(f"{name} (not installed here, so its requirements are unknown)")
            continue
        for needed, text in needs:
            if needed in carried:
                todo.append(needed)
            elif needed not in GPU_HAS:
                missing.append(f"{text} (required by {name})")
    return sorted(set(missing))


_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


def wheel_fits_gpu(filename: str) -> bool:
    """Whether pip on the GPU machine (CPython 3.12, manylinux x86_64) can install this wheel file."""
    match = _WHEEL.match(filename)
    if not match:
        return False
    py, abi, plat = (set(match.group(g).split(".")) for g in ("py", "abi", "plat"))
    tag = "cp" + GPU_PYTHON.replace(".", "")
    python_ok = bool(py & {"py3", "py" + tag[2:], tag}) or (
        "abi3" in abi and any(p.startswith("cp3") and int(p[3:] or 0) <= int(tag[3:]) for p in py)
    )
    abi_ok = bool(abi & {"none", "abi3", tag})
    plat_ok = "any" in plat or any(p in GPU_PLATFORMS for p in plat)
    return python_ok and abi_ok and plat_ok


def check(wheels: Path, items: list[Item]) -> list[str]:
    """What is wrong with the wheelhouse ``wheels`` for ``items`` (empty: ready to carry)."""
    problems = []
    files = sorted(p.name for p in wheels.glob("*.whl")) if wheels.is_dir() else []
    by_name: dict[str, list[str]] = {}
    for filename in files:
        match = _WHEEL.match(filename)
        by_name.setdefault(normalize(match.group("name")) if match else filename, []).append(filename)
    wanted = {normalize(item.name): item for item in items}
    for key, item in wanted.items():
        found = by_name.get(key, [])
        if not found:
            problems.append(f"no wheel of {item.pin}")
        elif len(found) > 1:
            problems.append(f"{len(found)} wheels of {item.name} ({', '.join(found)}): keep one, two stop the install")
        else:
            match = _WHEEL.match(found[0])
            assert match is not None
            if match.group("version") != item.version:
                problems.append(f"{found[0]} is not version {item.version}")
            if not wheel_fits_gpu(found[0]):
                problems.append(f"{found[0]} does not install on the GPU machine (CPython {GPU_PYTHON}, x86_64)")
    for key, names in by_name.items():
        if key not in wanted:
            problems.append(f"{', '.join(names)}: not in the plan (remove it)")
    requirements = wheels / "requirements.txt"
    pins = sorted(item.pin for item in items)
    if not requirements.is_file() or sorted(requirements.read_text().split()) != pins:
        problems.append(f"{requirements} does not pin exactly: {' '.join(pins)}")
    total = wheelhouse_bytes(wheels) + tree_bytes()
    if total > LIMIT_BYTES:
        problems.append(
            f"wheels + working tree = {total / 2**20:.1f} MiB, over the {LIMIT_BYTES / 2**20:.0f} MiB a run carries"
        )
    return problems


def wheelhouse_bytes(wheels: Path) -> int:
    return sum(p.stat().st_size for p in wheels.iterdir() if p.is_file()) if wheels.is_dir() else 0


def tree_bytes() -> int:
    """The bytes of the working tree that travels with a run (tracked and untracked, not ignored)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    total = 0
    for name in out.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def build(out: Path, download: bool = True) -> list[Item]:
    """Fill ``out/wheels`` for the plan and return it; raises SystemExit with the problems if any."""
    items = plan(download)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for stale in [*wheels.glob("*.whl"), *wheels.glob("*.tar.gz")]:
        stale.unlink()
    for source in CASTILLO.values():
        _run([sys.executable, "-m", "build", "-q", "--no-isolation", "--outdir", str(wheels), str(source)])
    for sdist in wheels.glob("*.tar.gz"):
        sdist.unlink()
    downloads = [item.pin for item in items if not item.built]
    if downloads:
        platforms = [arg for plat in GPU_PLATFORMS for arg in ("--platform", plat)]
        _run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"),
                *("--python-version", GPU_PYTHON, "--implementation", "cp", *platforms, "-d", str(wheels)),
                *downloads,
            ]
        )
    (wheels / "requirements.txt").write_text("".join(item.pin + "\n" for item in items))
    return items


def report(wheels: Path, items: list[Item]) -> list[str]:
    """Print the wheelhouse and what travels; return the problems."""
    reasons = {normalize(item.name): item.reason for item in items}
    for path in sorted(wheels.glob("*.whl")):
        match = _WHEEL.match(path.name)
        key = normalize(match.group("name")) if match else ""
        print(f"  {path.stat().st_size / 2**20:7.2f} MiB  {path.name}  ({reasons.get(key, '?')})")
    wheel_total, tree = wheelhouse_bytes(wheels), tree_bytes()
    print(
        f"wheelhouse {wheel_total / 2**20:.1f} MiB in {wheels}; with the working tree ({tree / 2**20:.1f} MiB) "
        f"{(wheel_total + tree) / 2**20:.1f} MiB of the {LIMIT_BYTES / 2**20:.0f} MiB a run carries"
    )
    problems = check(wheels, items)
    gaps = uncovered()
    problems += [f"needed on the GPU machine and neither carried nor there: {gap}" for gap in gaps]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".gpu-kit", help="kit directory (default .gpu-kit)")
    parser.add_argument("--no-download", action="store_true", help="castillo's own wheels only (no network)")
    parser.add_argument("--check", action="store_true", help="only check an existing wheelhouse")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    wheels = args.out / "wheels"
    items = plan(not args.no_download) if args.check else build(args.out, not args.no_download)
    problems = report(wheels, items)
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if not problems:
        print(f"ready: carry {os.path.relpath(args.out, REPO)} (see docs/benchmarks.md, GPU kit)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
