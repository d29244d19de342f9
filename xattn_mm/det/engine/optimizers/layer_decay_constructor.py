"""Layer-wise learning-rate decay over a Swin Transformer V2 backbone inside
a detector, as Plain-DETR and IA-DETR train it."""

from typing import List, Optional, Sequence

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn


def swin_v2_layer_id(name: str, depths: Sequence[int]) -> int:
    """Layer id of a backbone parameter of mmpretrain's Swin V2 layout, in
    the official numbering (Plain-DETR's ``get_swin_layer_id``).

    With ``L = sum(depths)`` blocks: the patch embedding is layer 0, block
    ``i`` of stage ``s`` is layer ``sum(depths[:s]) + i + 1``, a patch
    merging shares the id of the last block before it, and every other
    backbone parameter (the output norms) is layer ``L + 1``. mmpretrain
    puts the merging that precedes stage ``s`` in ``stages.s.downsample``;
    the official code keeps it at the end of stage ``s - 1``. Either way its
    id is ``sum(depths[:s])``.

    Args:
        name (str): Parameter name relative to the backbone, e.g.
            ``'stages.2.blocks.5.attn.w_msa.qkv.weight'``.
        depths (Sequence[int]): Blocks per stage.

    Returns:
        int: The layer id, in ``[0, sum(depths) + 1]``.
    """
    parts = name.split('.')
    if parts[0] == 'patch_embed':
        return 0
    if parts[0] == 'stages' and parts[2] == 'blocks':
        stage = int(parts[1])
        return sum(depths[:stage]) + int(parts[3]) + 1
    if parts[0] == 'stages' and parts[2] == 'downsample':
        return sum(depths[: int(parts[1])])
    return sum(depths) + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """:class:`~mmengine.optim.DefaultOptimWrapperConstructor` with the
    learning rate of a Swin V2 backbone decayed layer by layer.

    Every parameter first gets its group from the default rules
    (``custom_keys``, ``norm_decay_mult``, ``bias_decay_mult``, ...); then
    the learning rate of a backbone parameter with layer id ``k``
    (:func:`swin_v2_layer_id`) is multiplied by
    ``layer_decay_rate ** (sum(depths) + 1 - k)``. The output norms and
    everything outside the backbone keep the full rate; the patch embedding
    gets the smallest. This is the official ``--use_layerwise_decay``
    (``get_layerwise_param_dict`` in Plain-DETR's and IA-DETR's
    ``util/misc.py``).

    mmdet's ``LearningRateDecayOptimizerConstructor`` only numbers ConvNeXt
    layers, and mmpretrain's ``LearningRateDecayOptimWrapperConstructor``
    needs ``get_layer_depth`` on the model (mmdet detectors have none; its
    Swin V1 rule would also place mmpretrain's V2 patch merging one stage
    late), hence this constructor.

    The backbone must have mmpretrain's Swin V2 layout: ``depths``,
    ``patch_embed`` and ``stages[s].blocks`` / ``stages[s].downsample``,
    with the patch merging at the start of stages 1..n (stage 0 has none).

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config.
        paramwise_cfg (dict): The default constructor's options plus
            ``layer_decay_rate`` (float in (0, 1]), required.
    """

    def __init__(
        self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None
    ) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        rate = self.paramwise_cfg.get('layer_decay_rate')
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not 0 < rate <= 1
        ):
            raise ValueError(
                'paramwise_cfg.layer_decay_rate must be a number in (0, 1], '
                f'got {rate!r}.'
            )
        self.layer_decay_rate = float(rate)

    def add_params(
        self, params: List[dict], module: nn.Module, prefix: str = '', **kwargs
    ) -> None:
        """Build the default param groups, then scale the backbone's
        learning rates (once, at the top of the recursion).

        Args:
            params (list[dict]): Param groups, extended in place.
            module (nn.Module): The model (or, in the recursion, a child).
            prefix (str): The module's name in the model. Defaults to ''.
        """
        super().add_params(params, module, prefix=prefix, **kwargs)
        if prefix:
            return
        depths = self._backbone_depths(module)
        top = sum(depths) + 1
        names = {id(p): name for name, p in module.named_parameters()}
        for group in params:
            name = names[id(group['params'][0])]
            if not name.startswith('backbone.'):
                continue
            layer_id = swin_v2_layer_id(name[len('backbone.') :], depths)
            scale = self.layer_decay_rate ** (top - layer_id)
            group['lr'] = group.get('lr', self.base_lr) * scale

    @staticmethod
    def _backbone_depths(model: nn.Module) -> List[int]:
        backbone = getattr(model, 'backbone', None)
        depths = getattr(backbone, 'depths', None)
        stages = getattr(backbone, 'stages', None)
        if (
            depths is None
            or stages is None
            or len(stages) != len(depths)
            or getattr(stages[0], 'downsample', True) is not None
            or not hasattr(backbone, 'patch_embed')
        ):
            raise TypeError(
                'LayerDecayOptimWrapperConstructor numbers the layers of '
                "mmpretrain's SwinTransformerV2 layout (depths, patch_embed, "
                'stages with the patch merging at their start); got a '
                f'{type(backbone).__name__} backbone. Use '
                'DefaultOptimWrapperConstructor (e.g. with a backbone '
                'lr_mult) for other backbones.'
            )
        return list(depths)
