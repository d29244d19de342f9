"""Fixes to mmengine 0.10.x that every xattn_mm run needs.

Importing this package (the tools do, and so does each host subpackage, hence
every config's ``custom_imports``) installs them once:

- :mod:`.checkpoint`: checkpoints load with ``weights_only=True`` unless they
  are trusted (the run's own work_dir when resuming, or an explicit opt-in).
- :mod:`.dist`: CPU-only distributed runs on gloo.

It also registers :class:`AutocastOptimWrapper` (bf16 autocast without a
loss scaler, on the CPU too) into mmengine's optim-wrapper registry.
"""

from .checkpoint import (
    UntrustedCheckpointError,
    is_trusted_checkpoint,
    load_local_checkpoint,
    trust_checkpoint,
)
from .dist import install_cpu_dist_support
from .optim_wrapper import AutocastOptimWrapper

install_cpu_dist_support()

__all__ = [
    'AutocastOptimWrapper',
    'UntrustedCheckpointError',
    'install_cpu_dist_support',
    'is_trusted_checkpoint',
    'load_local_checkpoint',
    'trust_checkpoint',
]
