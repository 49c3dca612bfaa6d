#!/usr/bin/env bash
# The GPU kit's driver, run on the GPU machine from the repository root (no network there):
# install the carried wheelhouse into a target directory, then run the measurement.
#
#   bash bench/gpu/run.sh [bench/gpu/measure.py options]
#
# Needs .gpu-kit/wheels (make gpu-kit here; the run tool's carry brings it). Environment:
#   KIT_WHEELS  the wheelhouse                 (default .gpu-kit/wheels)
#   KIT_SITE    where the wheels are installed (default /tmp/castillo-kit-site)
#   KIT_PYTHON  the Python with torch          (default python3)
#   KIT_LIMIT_S kill the measurement after     (default 450 s: one run call is at most 600 s)
#   OUT         if set, the log and the figures land there: $OUT/gpu_kit.log, $OUT/gpu_kit.json
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PY=${KIT_PYTHON:-python3}
WHEELS=${KIT_WHEELS:-.gpu-kit/wheels}
SITE=${KIT_SITE:-/tmp/castillo-kit-site}
LIMIT=${KIT_LIMIT_S:-450}

if [[ ! -f "$WHEELS/requirements.txt" ]]; then
    echo "gpu kit: no $WHEELS/requirements.txt: run 'make gpu-kit' and carry .gpu-kit" >&2
    exit 2
fi
start=$(date +%s)
"$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --root-user-action=ignore --upgrade --target "$SITE" -r "$WHEELS/requirements.txt"
echo "gpu kit: $(grep -c . "$WHEELS/requirements.txt") wheels installed into $SITE in $(( $(date +%s) - start )) s"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

args=("$@")
log=/dev/null
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    log="$OUT/gpu_kit.log"
    args+=(--json "$OUT/gpu_kit.json")
fi
set +e
timeout "$LIMIT" "$PY" bench/gpu/measure.py "${args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
    echo "gpu kit: the measurement failed or ran past ${LIMIT}s (exit $status)" >&2
fi
exit "$status"
