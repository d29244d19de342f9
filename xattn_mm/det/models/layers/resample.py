"""2x (transposed) convolution stacks that change a map's stride, with
channel LayerNorm and GELU between steps (Plain-DETR's proposal levels and
backbone upsampling)."""

import math
from typing import Sequence

from torch import Tensor, nn


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def resample_stack(channels: Sequence[int], upsample: bool) -> nn.Sequential:
    """Steps ``channels[i] -> channels[i + 1]``, each a 2x2 stride-2
    ``ConvTranspose2d`` (``upsample``) or ``Conv2d``, with
    :class:`ChannelLayerNorm` and GELU between consecutive steps.

    Args:
        channels (Sequence[int]): Input channels, then each step's output.
        upsample (bool): Double the resolution at each step, else halve it.

    Returns:
        nn.Sequential: Layers ``0, 3, 6, ...`` are the convolutions; with one
        channel entry (no step) it is empty, i.e. the identity.
    """
    conv = nn.ConvTranspose2d if upsample else nn.Conv2d
    layers = []
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        if i:
            layers += [ChannelLayerNorm(cin), nn.GELU()]
        layers.append(conv(cin, cout, 2, 2))
    return nn.Sequential(*layers)


def stride_steps(in_stride: int, out_stride: int, name: str) -> int:
    """Number of 2x steps between two strides; an error naming ``name``
    when they are not a power of 2 apart."""
    ratio = max(in_stride, out_stride) / min(in_stride, out_stride)
    steps = int(round(math.log2(ratio)))
    if 2**steps != ratio:
        raise ValueError(
            f'{name}: stride {out_stride} must be the input stride '
            f'{in_stride} times or divided by a power of 2.'
        )
    return steps
