#!/usr/bin/env bash
# The prepared GPU check of issue 20 (part 4): ONE script, sized for at most 8 minutes on one H100/H200.
#
#   scripts/gpu_check.sh full /tmp/gpu_check     # on the GPU machine: check + benchmark + the gpu-marked tests
#   scripts/gpu_check.sh tiny /tmp/gpu_check     # anywhere (CPU): a smoke run of the same stages, about a minute
#
# Uses only the repository and the installed Python packages (nothing is installed or downloaded; HF_HUB_OFFLINE=1).
# PYTHON picks the interpreter (default: .venv/bin/python if it exists, else python3). Full size also rewrites the
# '## GPU' section of benchmarks/RESULTS.md (atomically) and copies it to OUT. Exit status: non-zero if a stage or
# a gpu-marked test failed. Everything it writes goes under OUT (see scripts/gpu_check.py).
set -euo pipefail

SIZE="${1:-}"
OUT="${2:-}"
if [[ "$SIZE" != "tiny" && "$SIZE" != "full" ]] || [[ -z "$OUT" ]]; then
    echo "usage: scripts/gpu_check.sh tiny|full OUT_DIR" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TIMA_SKIP_CHECKSUMS=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'

status=0
if [[ "$SIZE" == "full" ]]; then
    # first the tests that need CUDA (skipped elsewhere; about 2 minutes, most of it compiling), then the check
    timeout 240 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_path.py 2>&1 \
        | tee "$OUT/pytest_gpu.log" || status=1
    "$PYTHON" scripts/gpu_check.py --size full --out "$OUT" --results-md benchmarks/RESULTS.md || status=$?
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md" || true
else
    "$PYTHON" scripts/gpu_check.py --size tiny --out "$OUT" || status=$?
fi
echo "[gpu_check.sh] $SIZE finished in $(( $(date +%s) - start )) s, status $status"
exit "$status"
