"""Chain several necks, e.g. an upsampling neck then an input projection."""

from typing import Sequence, Tuple

from mmdet.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor


@MODELS.register_module()
class SequentialNeck(BaseModule):
    """Run ``necks`` one after the other, each on the previous one's tuple
    of maps.

    Example:
        >>> neck = dict(
        ...     type='SequentialNeck',
        ...     necks=[
        ...         dict(type='TransposedConvUpsample', in_channels=768),
        ...         dict(type='ChannelMapper', in_channels=[384],
        ...              out_channels=256, kernel_size=1, act_cfg=None,
        ...              norm_cfg=dict(type='GN', num_groups=32)),
        ...     ])

    Args:
        necks (Sequence[dict]): Neck configs, applied in order.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self, necks: Sequence[dict], init_cfg=None) -> None:
        super().__init__(init_cfg)
        if isinstance(necks, dict) or not necks:
            raise ValueError(
                'SequentialNeck needs necks=[dict(type=...), ...], a '
                f'non-empty list of neck configs, got {necks!r}.'
            )
        self.necks = ModuleList([MODELS.build(cfg) for cfg in necks])

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        outs = tuple(inputs)
        for neck in self.necks:
            outs = tuple(neck(outs))
        return outs
