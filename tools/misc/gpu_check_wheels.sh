#!/usr/bin/env bash
# Fill .whl/ with what tools/analysis_tools/gpu_check.py needs on the GPU machine (requirements/gpu_check.txt:
# cp312 manylinux wheels, and mmcv 2.1.0 built here as the pure-Python mmcv_lite, without its compiled ops).
#   bash tools/misc/gpu_check_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
# Then, on the GPU machine, from the repository root (docs/benchmarks.md, "GPU check"):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:. python3 tools/analysis_tools/gpu_check.py --out $OUT/gpu_check.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.whl}"
PYVER="${2:-3.12}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$DEST"
# PIP_CONSTRAINT= : the machine-wide constraints do not apply to another interpreter's wheels.
PIP_CONSTRAINT= "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST" -r "$ROOT/requirements/gpu_check.txt"
SRC="$(mktemp -d)"
PIP_CONSTRAINT= "$PYTHON" -m pip download -q --no-deps --no-build-isolation --no-binary :all: -d "$SRC" mmcv==2.1.0
MMCV_WITH_OPS=0 PIP_CONSTRAINT= "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir \
  -w "$DEST" "$SRC"/mmcv-2.1.0.tar.gz
rm -rf "$SRC"
ls "$DEST"
du -sh "$DEST"
