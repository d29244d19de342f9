"""xattn_mm components for mmdet, registered into ``mmdet.registry``.

Configs opt in with ``custom_imports = dict(imports=['xattn_mm.det'],
allow_failed_imports=False)``.
"""

import mmdet  # noqa: F401

import xattn_mm.engine  # noqa: F401  (registers its components)
from xattn_mm.compat.host_version import check_host_version

from . import (  # noqa: F401  (registers them)
    datasets,
    engine,
    evaluation,
    models,
    visualization,
)

check_host_version('mmcv')
check_host_version('mmdet')
