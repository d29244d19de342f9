"""What tools/setup_env.sh builds mmcv with, and whether the result has the
ops this machine needs.

    python tools/misc/mmcv_ops_check.py build-env  # NAME=value lines
    python tools/misc/mmcv_ops_check.py check      # exit 0, or 1 + reason

On a machine where ``torch.cuda.is_available()``, mmcv is built with its CUDA
ops (``FORCE_CUDA=1``, ``TORCH_CUDA_ARCH_LIST`` from the GPUs' compute
capabilities unless set), and ``check`` runs ``nms`` and
``sigmoid_focal_loss`` on CUDA tensors: a cached CPU-only wheel imports
``mmcv._ext`` fine and only fails at the first focal loss of a training run
("implementation for device cuda:0 not found"). Needs torch, and mmcv for
``check``; nothing else.
"""

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

CPU_ONLY = 'cpu-only'
NO_EXT = 'no-ext'


def gpu_capabilities() -> List[Tuple[int, int]]:
    """Compute capabilities of the visible GPUs; empty without CUDA."""
    if not torch.cuda.is_available():
        return []
    return [
        torch.cuda.get_device_capability(i)
        for i in range(torch.cuda.device_count())
    ]


def build_env(
    env: Dict[str, str],
    capabilities: Callable[[], Sequence[Tuple[int, int]]] = gpu_capabilities,
) -> Dict[str, str]:
    """The variables of the mmcv build.

    Args:
        env (dict): The current environment (``os.environ``).
        capabilities (Callable): Probe of the GPUs' compute capabilities.

    Returns:
        dict[str, str]: ``MMCV_WITH_OPS``, ``FORCE_CUDA`` ('1' with a GPU
        or when set to 1, else '0') and, with a GPU, ``TORCH_CUDA_ARCH_LIST``
        (kept when set, else the distinct capabilities, e.g. '9.0' on an
        H100 / H200).

    Raises:
        ValueError: If ``FORCE_CUDA=0`` is set on a machine with a GPU (the
            build would lack the CUDA ops the training needs).
    """
    found = sorted(set(capabilities()))
    out = dict(MMCV_WITH_OPS='1', FORCE_CUDA='1' if found else '0')
    if not found:
        if env.get('FORCE_CUDA') == '1':  # e.g. an image built without GPU
            out['FORCE_CUDA'] = '1'
            if env.get('TORCH_CUDA_ARCH_LIST'):
                out['TORCH_CUDA_ARCH_LIST'] = env['TORCH_CUDA_ARCH_LIST']
        return out
    if env.get('FORCE_CUDA') == '0':
        raise ValueError(
            'FORCE_CUDA=0 is set but this machine has a CUDA GPU: mmcv would '
            'build without the CUDA ops that training needs (focal loss, '
            'nms). Unset FORCE_CUDA.'
        )
    out['TORCH_CUDA_ARCH_LIST'] = env.get('TORCH_CUDA_ARCH_LIST') or ';'.join(
        f'{major}.{minor}' for major, minor in found
    )
    return out


def _run_cuda_ops() -> None:
    from mmcv.ops import nms, sigmoid_focal_loss

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    kept = nms(boxes.cuda(), torch.tensor([0.9, 0.8]).cuda(), 0.5)[1]
    assert kept.tolist() == [0], kept
    logits = torch.zeros(2, 3, device='cuda', requires_grad=True)
    loss = sigmoid_focal_loss(
        logits, torch.tensor([0, 2], device='cuda'), 2.0, 0.25, None, 'mean'
    )
    loss.backward()
    torch.cuda.synchronize()


def _import_ext() -> None:
    import mmcv._ext  # noqa: F401


def check(
    cuda_available: Callable[[], bool] = torch.cuda.is_available,
    import_ext: Callable[[], None] = _import_ext,
    run_cuda_ops: Callable[[], None] = _run_cuda_ops,
) -> Optional[Tuple[str, str]]:
    """Whether the installed mmcv has the ops this machine needs.

    Args:
        cuda_available (Callable): CUDA probe.
        import_ext (Callable): Imports ``mmcv._ext``.
        run_cuda_ops (Callable): Runs ``nms`` and ``sigmoid_focal_loss``
            (forward and backward) on CUDA tensors.

    Returns:
        tuple[str, str] | None: None when fine, else (``'no-ext'`` or
        ``'cpu-only'``, the message).
    """
    try:
        import_ext()
    except ImportError as error:
        return NO_EXT, (
            f'mmcv was installed without its compiled ops ({error}).'
        )
    if not cuda_available():
        return None
    try:
        run_cuda_ops()
    except (RuntimeError, AssertionError) as error:
        first = str(error).strip().splitlines()[0] if str(error) else ''
        return CPU_ONLY, (
            'mmcv has no CUDA kernels although CUDA is available (a CPU-only '
            f'build, e.g. a cached wheel): nms / sigmoid_focal_loss on CUDA '
            f'failed: {first}'
        )
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('command', choices=['build-env', 'check'])
    args = parser.parse_args(argv)
    if args.command == 'build-env':
        try:
            variables = build_env(dict(os.environ))
        except ValueError as error:
            print(f'[setup] ERROR: {error}', file=sys.stderr)
            return 1
        for name, value in variables.items():
            print(f'{name}={value}')
        return 0
    problem = check()
    if problem is None:
        where = 'CPU and CUDA' if torch.cuda.is_available() else 'CPU'
        print(f'[setup] mmcv ops OK ({where})')
        return 0
    kind, message = problem
    print(f'[setup] {kind}: {message}', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
