"""CPU-only distributed runs (torchrun + gloo) for mmengine 0.10.x, without
patching mmengine.

Three things stop ``tools/dist_train.sh`` from working on a CPU machine:

1. ``mmengine.dist.init_dist`` calls ``torch.cuda.set_device`` (an error on a
   CPU build of torch) and defaults to the NCCL backend.
   :func:`init_cpu_dist` starts the process group with gloo instead, before
   the runner is built; the runner then finds it started and skips its own
   ``init_dist``.
2. ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP, which DDP
   rejects for a module on the CPU. :class:`CPUDistributedDataParallel`, a
   registered model wrapper, drops them for CPU modules.
3. mmengine never destroys the process group. A gloo worker thread can still
   be releasing the last collective when the interpreter finalizes, and the
   rank then aborts ("terminate called without an active exception") after
   a successful run. :func:`shutdown_dist` ends the group before that.

:func:`prepare_cpu_dist` applies 1 and 2 to a config; the project's tools
call it and :func:`shutdown_dist` (see ``xattn_mm.engine.tool_utils``). With
CUDA available none of this changes anything but the clean shutdown.
"""

import time
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import init_dist, is_distributed
from mmengine.logging import print_log
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

# Seconds for gloo's worker threads to release the last collective.
_SETTLE_SECONDS = 0.2


@contextmanager
def _without_cuda_set_device() -> Iterator[None]:
    """``torch.cuda.set_device`` as a no-op, for the duration of one
    ``init_dist`` call on a machine without CUDA."""
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def init_cpu_dist(launcher: str, **dist_cfg) -> bool:
    """Start the process group on a machine without CUDA: gloo instead of
    NCCL, and no ``torch.cuda.set_device``.

    Args:
        launcher (str): 'pytorch', 'slurm' or 'mpi' (as ``--launcher``);
            'none' does nothing.
        **dist_cfg: The config's ``env_cfg.dist_cfg`` (``backend`` is
            replaced by gloo when it asks for NCCL).

    Returns:
        bool: Whether this call started a process group.
    """
    if launcher == 'none' or torch.cuda.is_available() or is_distributed():
        return False
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        print_log(
            'CUDA is not available: using the gloo backend instead of nccl.',
            logger='current',
        )
    dist_cfg['backend'] = 'gloo'
    with _without_cuda_set_device():
        init_dist(launcher, **dist_cfg)
    return True


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` that also wraps a module whose
    parameters live on the CPU: DDP wants ``device_ids=None`` there, while
    ``Runner.wrap_model`` passes the local rank as a GPU index."""

    def __init__(self, module: torch.nn.Module, *args, **kwargs) -> None:
        params = list(module.parameters())
        if params and all(p.device.type == 'cpu' for p in params):
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        super().__init__(module, *args, **kwargs)


def prepare_cpu_dist(cfg: Config) -> bool:
    """On a machine without CUDA and with a launcher, start the gloo process
    group (:func:`init_cpu_dist`) and make the runner wrap the model with
    :class:`CPUDistributedDataParallel` (if the config uses mmengine's
    default DDP wrapper).

    Args:
        cfg (Config): The full config; ``cfg.launcher`` is read,
            ``cfg.model_wrapper_cfg`` may be set.

    Returns:
        bool: Whether the config runs distributed on the CPU.
    """
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if not init_cpu_dist(cfg.get('launcher', 'none'), **dist_cfg):
        return False
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') in (
        'MMDistributedDataParallel',
        MMDistributedDataParallel,
    ):
        wrapper['type'] = 'CPUDistributedDataParallel'
        cfg.model_wrapper_cfg = wrapper
    return True


def shutdown_dist(success: bool) -> None:
    """Let every rank finish its collectives, then destroy the process group.

    A gloo worker thread drops its reference to a finished collective (and
    to the tensors it holds) shortly after the caller sees it complete; if
    that happens once the interpreter is finalizing, the thread cannot take
    the GIL and the rank aborts. Measured with torchrun, 2 CPU ranks, 30 runs
    each: 3 aborts with barrier + destroy, none with a settle time between
    barrier and destroy (60 runs), as with the shared recipe (26 runs).

    After a failure the other ranks may be blocked in another collective,
    so a barrier could hang: the group is only destroyed, and the launcher
    stops the job.

    Args:
        success (bool): Whether this rank's run finished without error.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    if success:
        torch_dist.barrier()
        time.sleep(_SETTLE_SECONDS)
    torch_dist.destroy_process_group()
