"""xattn_mm components for mmseg, registered into ``mmseg.registry``.

Configs opt in with ``custom_imports = dict(imports=['xattn_mm.seg'],
allow_failed_imports=False)``.
"""

import mmseg  # noqa: F401

import xattn_mm.engine  # noqa: F401  (registers its components)
from xattn_mm.compat.host_version import check_host_version

from . import models  # noqa: F401  (registers)

check_host_version('mmcv')
check_host_version('mmsegmentation')
