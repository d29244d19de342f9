"""CPU-only distributed runs (torchrun + gloo) for mmengine 0.10.x.

Three things stop ``tools/dist_train.sh`` from working on a CPU machine:

1. ``mmengine.dist.init_dist`` calls ``torch.cuda.set_device`` (an error on a
   CPU build of torch) and defaults to the NCCL backend.
2. ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to DDP, which
   DDP rejects for a module on the CPU.
3. mmengine never destroys the process group. A gloo worker thread can still
   be releasing the last collective when the interpreter finalizes, and the
   rank then aborts ("terminate called without an active exception") after
   a successful run.

:func:`install_cpu_dist_support` fixes each where it happens and changes
nothing when CUDA is available (apart from the clean shutdown).
"""

import atexit
import functools
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as dist_utils
from mmengine.logging import print_log
from mmengine.model.wrappers import MMDistributedDataParallel

_state = {'installed': False, 'uncaught_exception': False}
# Seconds for gloo's worker threads to release the last collective at exit.
_SETTLE_SECONDS = 0.2


@contextmanager
def _without_cuda_set_device() -> Iterator[None]:
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _cpu_capable(init_fn: Callable) -> Callable:
    """Wrap one of mmengine's ``_init_dist_*`` functions: without CUDA, skip
    ``torch.cuda.set_device`` and use gloo instead of NCCL."""

    @functools.wraps(init_fn)
    def wrapper(backend: str, *args, **kwargs) -> None:
        if torch.cuda.is_available():
            return init_fn(backend, *args, **kwargs)
        if backend == 'nccl':
            print_log(
                'CUDA is not available: using the gloo backend instead of '
                'nccl.',
                logger='current',
            )
            backend = 'gloo'
        with _without_cuda_set_device():
            return init_fn(backend, *args, **kwargs)

    return wrapper


def _cpu_ddp_init(ddp_init: Callable) -> Callable:
    """DDP takes ``device_ids=None`` for a module whose parameters live on
    the CPU; drop the GPU index mmengine passes."""

    @functools.wraps(ddp_init)
    def wrapper(self, module: torch.nn.Module, *args, **kwargs) -> None:
        params = list(module.parameters())
        if params and all(p.device.type == 'cpu' for p in params):
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        ddp_init(self, module, *args, **kwargs)

    return wrapper


def _record_uncaught_exception(hook: Callable) -> Callable:

    @functools.wraps(hook)
    def wrapper(*args) -> None:
        _state['uncaught_exception'] = True
        hook(*args)

    return wrapper


def _destroy_process_group_at_exit() -> None:
    """Let every rank finish its collectives, then destroy the group.

    A gloo worker thread drops its reference to a finished collective (and
    to the tensors it holds) shortly after the caller sees it complete; if
    that happens once the interpreter is finalizing, the thread cannot take
    the GIL and the rank aborts. Measured with torchrun, 2 CPU ranks, 30 runs
    each: 3 aborts with barrier + destroy, none with a settle time between
    barrier and destroy (60 runs), as with the shared recipe (26 runs).

    After an uncaught exception the other ranks may be blocked in another
    collective, so a barrier could hang: the group is left to the launcher,
    which stops the job anyway.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    if not _state['uncaught_exception']:
        torch_dist.barrier()
        time.sleep(_SETTLE_SECONDS)
    torch_dist.destroy_process_group()


def install_cpu_dist_support() -> None:
    """Install the three fixes described in the module docstring (once)."""
    if _state['installed']:
        return
    _state['installed'] = True
    for name in ('_init_dist_pytorch', '_init_dist_slurm', '_init_dist_mpi'):
        setattr(dist_utils, name, _cpu_capable(getattr(dist_utils, name)))
    MMDistributedDataParallel.__init__ = _cpu_ddp_init(
        MMDistributedDataParallel.__init__
    )
    sys.excepthook = _record_uncaught_exception(sys.excepthook)
    atexit.register(_destroy_process_group_at_exit)
