#!/usr/bin/env bash
# Creates (or completes) the xattn_mm development environment: a virtualenv with the pinned
# OpenMMLab stack, xattn_mm installed editable, and the test tools.
#   VENV=.venv BASE_PYTHON=python3.11 bash tools/setup_env.sh      (what `make setup` runs)
#   On a machine where torch sees a GPU, mmcv also gets its CUDA ops (needs nvcc; see README).
# Every pip call uses requirements/constraints.txt and requirements/gpu_check.txt (the
# versions that travel with the GPU check are the set-up's, transitive ones included). Measured on 2 cores: cold ~6 min
# (the mmcv ops build is ~5 of them), warm pip cache ~1 min. See README.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BASE_PYTHON="${BASE_PYTHON:-python3.11}"
C="$ROOT/requirements/constraints.txt"
G="$ROOT/requirements/gpu_check.txt"

[ -x "$VENV/bin/python" ] || "$BASE_PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$C" -c "$G")
T=$SECONDS
step() { echo "[setup] $1 ($((SECONDS - T)) s)"; T=$SECONDS; }

# 1. Tooling. setuptools<82 keeps pkg_resources (mmcv's setup.py, mmengine's 'mmdet::' bases).
"${PIP[@]}" -U pip wheel setuptools
step 'tooling'
# 2. CPU torch, alone: the exact pin takes the local CPU build.
"${PIP[@]}" torch
step 'torch'
# 3. mmcv's build and runtime dependencies.
"${PIP[@]}" mmengine ninja psutil
step 'mmengine, ninja, psutil'
# 4. mmcv with compiled ops: CPU, and CUDA where torch sees a GPU (FORCE_CUDA=1 and
#    TORCH_CUDA_ARCH_LIST from the GPUs, tools/misc/mmcv_ops_check.py build-env).
#    --no-build-isolation is required: in an isolated build torch is absent and mmcv
#    silently builds (and pip caches) a wheel without mmcv._ext.
CHECK=("$VENV/bin/python" "$ROOT/tools/misc/mmcv_ops_check.py")
BUILD_ENV=($("${CHECK[@]}" build-env))
echo "[setup] mmcv build: ${BUILD_ENV[*]}"
install_mmcv() {
  env "${BUILD_ENV[@]}" CPPFLAGS="${CPPFLAGS:--g0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" --no-build-isolation "$@" mmcv
}
install_mmcv
# A cached or installed wheel without the ops this machine needs (no mmcv._ext, or no CUDA
# kernels on a GPU machine) is refused: removed, and mmcv rebuilt from source once.
if ! "${CHECK[@]}" check; then
  echo '[setup] refusing that mmcv: removing it and its cached wheel, rebuilding.' >&2
  "$VENV/bin/python" -m pip uninstall -y mmcv
  "$VENV/bin/python" -m pip cache remove mmcv || true
  install_mmcv --no-cache-dir --force-reinstall --no-deps
  "${CHECK[@]}" check || {
    echo '[setup] ERROR: the rebuilt mmcv still lacks the ops above (on a GPU machine: is nvcc' \
      'of the CUDA version torch was built with on PATH?).' >&2
    exit 1
  }
fi
step 'mmcv with ops (built, or taken from the pip cache)'
# 5. The three hosts, torchvision, and what mmseg imports without declaring.
"${PIP[@]}" -r "$ROOT/requirements/hosts.txt"
step 'mmdet, mmsegmentation, mmpretrain, torchvision'
# 6. xattn_mm (editable) and the test tools.
"${PIP[@]}" --no-build-isolation -e "$ROOT" -r "$ROOT/requirements/tests.txt"
step 'xattn_mm (editable), pytest, ruff'
# 7. torchvision's only wheel for torch 2.13 is a CUDA build that cannot `import` on CPU torch,
#    and mmpretrain imports it. This .pth runs xattn_mm's import hook at interpreter start so
#    that plain `import mmpretrain` works in this environment (tests/test_setup.py checks it).
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo 'import xattn_mm.compat.torchvision_cpu' > "$SITE/xattn_mm_torchvision_cpu.pth"
# 8. Smoke test: every host imports with populated registries and mmcv's CPU ops run.
"$VENV/bin/python" - <<'PY'
import mmcv
import mmdet
import mmpretrain
import mmseg
import torch
from mmcv.ops import nms

boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]])
assert nms(boxes, torch.tensor([.9, .8]), 0.5)[1].tolist() == [0]
print(f'[setup] OK torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '
      f'mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}')
PY
step 'smoke test'
