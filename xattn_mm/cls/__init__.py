"""xattn_mm components for mmpretrain, registered into
``mmpretrain.registry``.

Configs opt in with ``custom_imports = dict(imports=['xattn_mm.cls'],
allow_failed_imports=False)``.
"""

# mmpretrain imports torchvision, which needs this on a CPU-only torch build.
import xattn_mm.compat.torchvision_cpu  # noqa: F401, I001

import mmpretrain  # noqa: F401

import xattn_mm.engine  # noqa: F401  (registers its components)
from xattn_mm.compat.host_version import check_host_version

from . import datasets, engine, evaluation, models  # noqa: F401  (registers)

check_host_version('mmpretrain')
