"""Mixed-precision parity: a module's output and gradients under CPU
autocast against the same computation in float32."""

from typing import Callable, Dict

import torch
from torch import Tensor, nn

AMP_DTYPES = (torch.float16, torch.bfloat16)


def _relative_error(value: Tensor, reference: Tensor) -> float:
    return float(
        (value.double() - reference.double()).norm()
        / reference.double().norm().clamp_min(1e-12)
    )


def _run(
    module: nn.Module, compute: Callable[[nn.Module], Tensor], dtype
) -> tuple:
    module.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
        out = compute(module)
    # A fixed random projection: every output element reaches the loss.
    weights = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(0)
    )
    (out.float() * weights).sum().backward()
    named = [(n, p.grad) for n, p in module.named_parameters()]
    grads = {n: g.detach().clone() for n, g in named if g is not None}
    return out.detach().float(), grads


def autocast_parity(
    module: nn.Module,
    compute: Callable[[nn.Module], Tensor],
    dtype: torch.dtype,
) -> Dict[str, float]:
    """Run ``compute(module)`` in float32 and under ``torch.autocast('cpu',
    dtype)``, back-propagate a fixed random projection of each output, and
    compare.

    Args:
        module (nn.Module): Float32 module; its gradients are overwritten.
        compute (Callable): Maps the module to an output tensor (a loss or
            a feature map); called once per precision, so any randomness
            inside must be seeded by ``compute`` itself.
        dtype (torch.dtype): ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        dict[str, float]: ``output`` and ``grad``, the relative L2 errors of
        the output and of all parameter gradients (concatenated);
        ``finite``, 1.0 if the output and every gradient are finite under
        autocast, else 0.0.

    Raises:
        AssertionError: If autocast leaves a parameter without gradient that
            float32 gives one, or the reverse.
    """
    ref_out, ref_grads = _run(module, compute, None)
    out, grads = _run(module, compute, dtype)
    assert set(grads) == set(ref_grads), sorted(set(grads) ^ set(ref_grads))[
        :5
    ]
    finite = bool(torch.isfinite(out).all()) and all(
        bool(torch.isfinite(g).all()) for g in grads.values()
    )
    names = sorted(grads)
    return dict(
        output=_relative_error(out, ref_out),
        grad=_relative_error(
            torch.cat([grads[n].flatten() for n in names]),
            torch.cat([ref_grads[n].flatten() for n in names]),
        ),
        finite=float(finite),
    )
