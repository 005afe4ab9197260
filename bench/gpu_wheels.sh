#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels bench/gpu.sh needs on a GPU machine without network:
# the packages reweigh's scoring imports that such a machine's image lacks (its torch, transformers,
# tokenizers and numpy are used as they are), at the versions this checkout's .venv runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
for name in pydantic pydantic_core annotated_types typing_inspection; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$version"
done
ls -l .whl
