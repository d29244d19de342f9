"""bf16 mixed precision without a loss scaler, on the CPU as on CUDA.

mmengine's :class:`~mmengine.optim.AmpOptimWrapper` refuses to run without
an accelerator and always scales the loss. bf16 has float32's exponent
range, so its gradients neither underflow nor need scaling: this wrapper
only runs the forward pass under ``torch.autocast``. ``tools/train.py --amp``
picks it on the CPU and for ``--amp-dtype bfloat16``; fp16 on CUDA keeps
mmengine's wrapper and its dynamic loss scaling.
"""

from contextlib import contextmanager
from typing import Optional, Union

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` whose forward pass runs under
    bf16 autocast; backward and the optimizer step are unchanged.

    Args:
        dtype (str or torch.dtype): The autocast dtype; only bfloat16, which
            needs no loss scaling. Defaults to ``'bfloat16'``.
        device_type (str, optional): The autocast device type. Defaults to
            None: ``'cuda'`` when CUDA is available, else ``'cpu'``.
        *args, **kwargs: :class:`~mmengine.optim.OptimWrapper` arguments
            (``optimizer`` first).
    """

    def __init__(
        self,
        *args,
        dtype: Union[str, torch.dtype] = 'bfloat16',
        device_type: Optional[str] = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                'AutocastOptimWrapper.dtype must be bfloat16 (no loss '
                f'scaler); got {dtype!r}. Use AmpOptimWrapper for float16.'
            )
        if device_type is None:
            device_type = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device_type not in ('cpu', 'cuda'):
            raise ValueError(
                "AutocastOptimWrapper.device_type must be 'cpu' or 'cuda', "
                f'got {device_type!r}.'
            )
        self.cast_dtype = torch.bfloat16
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient-accumulation context of the base class, plus autocast.

        Args:
            model (nn.Module): The training model.
        """
        with (
            super().optim_context(model),
            torch.autocast(self.device_type, dtype=self.cast_dtype),
        ):
            yield
