"""What xattn_mm adds to mmengine: registered components, and fixes that
the project's tools install (never this import).

Registered (into mmengine's root registries, so every host scope finds
them): :class:`AutocastOptimWrapper` (bf16 autocast without a loss scaler,
on the CPU too), :class:`CPUDistributedDataParallel`, :class:`FiniteLossHook`
and :class:`RandomStateHook`.

Installed by ``tools/train.py`` / ``tools/test.py`` (and ``mim``, which runs
them) through :func:`install_tool_runtime`, or by users who build their own
Runner with the same calls:

- :func:`install_checkpoint_policy`: every checkpoint scheme loads with
  ``weights_only=True`` and an allow-list (:mod:`.checkpoint`).
- :func:`prepare_cpu_dist` / :func:`shutdown_dist`: distributed runs on CPU
  machines (:mod:`.dist`).
"""

from .checkpoint import (
    SAFE_GLOBALS,
    CheckpointReadError,
    UntrustedCheckpointError,
    checkpoint_policy,
    export_checkpoint,
    install_checkpoint_policy,
    is_trusted_checkpoint,
    load_checkpoint_file,
    trust_checkpoint,
    uninstall_checkpoint_policy,
)
from .dist import (
    CPUDistributedDataParallel,
    init_cpu_dist,
    prepare_cpu_dist,
    shutdown_dist,
)
from .hooks import (
    FiniteLossHook,
    RandomStateHook,
    get_random_state,
    set_random_state,
)
from .optim_wrapper import AutocastOptimWrapper
from .pipeline import apply_pipeline

__all__ = [
    'SAFE_GLOBALS',
    'AutocastOptimWrapper',
    'CPUDistributedDataParallel',
    'CheckpointReadError',
    'FiniteLossHook',
    'RandomStateHook',
    'UntrustedCheckpointError',
    'apply_pipeline',
    'checkpoint_policy',
    'export_checkpoint',
    'get_random_state',
    'init_cpu_dist',
    'install_checkpoint_policy',
    'is_trusted_checkpoint',
    'load_checkpoint_file',
    'prepare_cpu_dist',
    'set_random_state',
    'shutdown_dist',
    'trust_checkpoint',
    'uninstall_checkpoint_policy',
]
