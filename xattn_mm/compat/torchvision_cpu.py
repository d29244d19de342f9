"""Make the PyPI torchvision wheel importable on a CPU-only torch build.

The only torchvision release pinned to torch 2.13.0 is a CUDA build. Its
compiled library links against the CUDA runtime of torch, so on a CPU torch it
cannot load; torchvision copes with that for most operators, but its
``_meta_registrations`` module registers fake kernels for ``torchvision::nms``
and ``torchvision::qnms`` unconditionally, and ``import torchvision`` fails
with ``operator torchvision::nms does not exist``. mmpretrain imports
torchvision, so every mmpretrain import fails with it.

Importing this module installs a meta-path finder that, the first time
``torchvision`` is imported, tries to load the compiled library and, only if
that fails, defines the schemas of those two operators. torchvision's Python
parts then work; its compiled operators stay unavailable (xattn_mm uses
``mmcv.ops`` and OpenCV instead). The set-up activates it at interpreter start
with a ``.pth`` file; nothing here imports torch until torchvision is imported.
"""

import importlib.abc
import importlib.util
import os
import sys
from typing import Optional

# Holds the torch.library.Library that owns the schemas; dropping it would
# unregister them.
_library = None


def _define_missing_schemas() -> None:
    global _library
    import torch

    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return
    pkg_dir = next(iter(spec.submodule_search_locations))
    compiled = [
        name
        for name in os.listdir(pkg_dir)
        if name.startswith('_C') and name.endswith('.so')
    ]
    if compiled:
        try:
            torch.ops.load_library(os.path.join(pkg_dir, compiled[0]))
            return
        except (OSError, RuntimeError):
            pass
    _library = torch.library.Library('torchvision', 'DEF')
    for op in ('nms', 'qnms'):
        _library.define(
            f'{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor'
        )


class TorchvisionCPUFinder(importlib.abc.MetaPathFinder):
    """Runs :func:`_define_missing_schemas` once, before torchvision loads."""

    def find_spec(
        self, fullname: str, path=None, target=None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname == 'torchvision':
            uninstall()
            _define_missing_schemas()
        # The regular finders import torchvision itself.
        return None


def uninstall() -> None:
    """Remove the finder from ``sys.meta_path`` (idempotent)."""
    sys.meta_path[:] = [
        f for f in sys.meta_path if not isinstance(f, TorchvisionCPUFinder)
    ]


def install() -> None:
    """Put the finder first on ``sys.meta_path`` unless torchvision is
    already imported (idempotent)."""
    if 'torchvision' in sys.modules:
        return
    uninstall()
    sys.meta_path.insert(0, TorchvisionCPUFinder())


install()
