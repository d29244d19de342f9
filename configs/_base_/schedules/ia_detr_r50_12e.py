# IA-DETR's schedule (./ia_detr_12e.py) for a ResNet backbone: ResNets have
# no layer-wise decay in the official code, and its default backbone lr is
# 0.1x (--lr_backbone 2e-5).
_base_ = './ia_detr_12e.py'

optim_wrapper = dict(
    constructor='DefaultOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'box_rpb': dict(decay_mult=0.0),
            'level_embed': dict(decay_mult=0.0),
        },
    ),
)
