"""Transposed-convolution upsampling of one backbone map (Plain-DETR's and
IA-DETR's ``upsample`` after the stride-32 Swin V2 stage)."""

from typing import Sequence, Tuple

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from ..layers.resample import resample_stack, stride_steps


@MODELS.register_module()
class TransposedConvUpsample(BaseModule):
    """Bring one feature map from ``in_stride`` to ``out_stride`` with 2x
    ``ConvTranspose2d`` steps, halving the channels at each step, with
    channel LayerNorm and GELU between steps.

    With the defaults a stride-32, 768-channel Swin V2-S map becomes a
    stride-16, 384-channel map through one ``ConvTranspose2d(768, 384, 2,
    2)`` and nothing else, as the official model.

    Args:
        in_channels (int): Channels of the input map.
        in_stride (int): Its stride. Defaults to 32.
        out_stride (int): Output stride; ``in_stride`` divided by a power of
            2. Defaults to 16.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        in_channels: int,
        in_stride: int = 32,
        out_stride: int = 16,
        init_cfg=None,
    ) -> None:
        super().__init__(init_cfg)
        if out_stride > in_stride:
            raise ValueError(
                f'out_stride ({out_stride}) must not exceed in_stride '
                f'({in_stride}): this neck only upsamples.'
            )
        steps = stride_steps(in_stride, out_stride, 'out_stride')
        if in_channels % 2**steps:
            raise ValueError(
                f'in_channels ({in_channels}) must be divisible by '
                f'{2**steps} to be halved {steps} times.'
            )
        self.in_channels = in_channels
        self.out_channels = in_channels // 2**steps
        self.layers = resample_stack(
            [in_channels // 2**i for i in range(steps + 1)], upsample=True
        )

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor]:
        """Upsample the one map of ``inputs`` (a tuple of one (B, C, H, W)
        tensor) to (B, C / 2**steps, H * 2**steps, W * 2**steps)."""
        if len(inputs) != 1:
            raise ValueError(
                f'TransposedConvUpsample takes one map, got {len(inputs)}: '
                'set the backbone out_indices to one stage.'
            )
        return (self.layers(inputs[0]),)
