#!/usr/bin/env bash
# Scoring on one CUDA GPU (an H200: about 4 minutes): the CUDA test run, then bench/gpu.py's parity,
# throughput and memory table, written to $OUT/gpu.md (the device tool) or bench/results/gpu.md.
#
#   bash bench/gpu_wheels.sh           # once, on a machine with pip: wheels the GPU machine lacks, into .whl/
#   bash bench/gpu.sh                  # on the GPU machine; with the device tool:
#                                      #   run(command="bash bench/gpu.sh", carry=[".whl"], timeout_s=600)
#   bash bench/gpu.sh --dry-run        # on any CPU: tiny shapes, proves every step runs (figures meaningless)
#
# Environment: PYTHON (default python3, the one with CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dry_run=0
case "${1:-}" in
    --dry-run) dry_run=1 ;;
    "") ;;
    *) echo "usage: bash bench/gpu.sh [--dry-run]" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1
# Carried wheels fill in only what this Python lacks (a CPU venv already has them all).
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c "import pydantic" 2>/dev/null; then
    site=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Fail in seconds, naming what is missing, rather than minutes in.
"$PY" - <<'PYEOF'
import importlib, sys
missing = [m for m in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pydantic", "pytest")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)} (bash bench/gpu_wheels.sh, then carry .whl)")
import torch, transformers
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
PYEOF

if [[ $dry_run == 1 ]]; then
    out=${OUT:-$(mktemp -d)}
    "$PY" -m pytest -q -p no:cacheprovider -rs tests/scoring/test_cuda.py
    "$PY" bench/gpu.py --dry-run --out "$out/gpu-dry-run.md"
    exit 0
fi

out=${OUT:-bench/results}
mkdir -p "$out"
set +e
# Every engine test on the GPU (device=auto picks CUDA there), plus the CPU-vs-CUDA comparisons.
timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" tests/scoring 2>&1 | tee "$out/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
set -e
timeout 330 "$PY" bench/gpu.py --out "$out/gpu.md"
echo "CUDA tests exit status: $tests_rc" | tee -a "$out/gpu.md"
exit "$tests_rc"
