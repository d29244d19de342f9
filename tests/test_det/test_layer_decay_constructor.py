import pytest
from mmdet.registry import MODELS
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import xattn_mm.cls  # noqa: F401  (mmpretrain.GlobalSwinTransformerV2)
import xattn_mm.det  # noqa: F401
import xattn_mm.det.engine  # noqa: F401  (the constructor)
from xattn_mm.det.engine.optimizers.layer_decay_constructor import (
    swin_v2_layer_id,
)
from xattn_mm.testing.one_shot import tiny_ia_detr_cfg, tiny_swin_v2_parts

RATE = 0.9
LR = 2e-4
WD = 0.05


def optim_cfg(**paramwise):
    return dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(
            dict(
                layer_decay_rate=RATE,
                norm_decay_mult=0.0,
                bias_decay_mult=0.0,
                custom_keys={
                    'box_rpb': dict(decay_mult=0.0),
                    'cpb_mlp': dict(decay_mult=0.0),
                    'logit_scale': dict(decay_mult=0.0),
                    'q_bias': dict(decay_mult=0.0),
                    'v_bias': dict(decay_mult=0.0),
                    'level_embed': dict(decay_mult=0.0),
                },
            ),
            **paramwise,
        ),
    )


@pytest.fixture(scope='module')
def swin_detector():
    init_default_scope('mmdet')
    # GlobalSwinTransformerV2, depths 2-2-2-2: 8 blocks, layer ids 0..9.
    return MODELS.build(tiny_ia_detr_cfg(**tiny_swin_v2_parts()))


def groups_by_name(model, optim_wrapper):
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(g['params'][0])]: g
        for g in optim_wrapper.optimizer.param_groups
    }


# (parameter, lr multiplier = 0.9 ** (sum(depths) + 1 - layer id), weight
# decay): ids from the official get_swin_layer_id numbering.
EXPECTED = [
    ('backbone.patch_embed.projection.weight', RATE**9, WD),
    ('backbone.patch_embed.norm.weight', RATE**9, 0.0),
    ('backbone.stages.0.blocks.0.attn.w_msa.qkv.weight', RATE**8, WD),
    ('backbone.stages.0.blocks.0.attn.w_msa.q_bias', RATE**8, 0.0),
    ('backbone.stages.0.blocks.1.ffn.layers.1.weight', RATE**7, WD),
    # merging before stage 1 = end of stage 0: the id of its last block
    ('backbone.stages.1.downsample.reduction.weight', RATE**7, WD),
    ('backbone.stages.1.downsample.norm.weight', RATE**7, 0.0),
    ('backbone.stages.1.blocks.0.norm1.weight', RATE**6, 0.0),
    ('backbone.stages.2.blocks.1.attn.w_msa.cpb_mlp.0.weight', RATE**3, 0.0),
    ('backbone.stages.3.downsample.reduction.weight', RATE**3, WD),
    ('backbone.stages.3.blocks.1.attn.w_msa.logit_scale', RATE**1, 0.0),
    ('backbone.stages.3.blocks.1.attn.w_msa.proj.weight', RATE**1, WD),
    ('backbone.norm3.weight', 1.0, 0.0),
    ('neck.necks.0.layers.0.weight', 1.0, WD),
    ('neck.necks.1.convs.0.gn.weight', 1.0, 0.0),
    ('decoder.layers.0.cross_attn.box_rpb.x_mlp.0.weight', 1.0, 0.0),
    ('decoder.layers.1.cross_attn.attn.k_proj.weight', 1.0, WD),
    ('decoder.layers.1.cross_attn.attn.k_proj.bias', 1.0, 0.0),
    ('level_embed', 1.0, 0.0),
    ('query_embedding.weight', 1.0, WD),
    ('bbox_head.cls_branches.0.weight', 1.0, WD),
]


def test_lr_multipliers_and_weight_decay(swin_detector):
    wrapper = build_optim_wrapper(swin_detector, optim_cfg())
    groups = groups_by_name(swin_detector, wrapper)
    for name, mult, wd in EXPECTED:
        group = groups[name]
        assert group['lr'] == pytest.approx(LR * mult), name
        assert group['weight_decay'] == pytest.approx(wd), name
    # every backbone parameter is below the full rate but the output norm
    assert all(
        g['lr'] < LR
        for n, g in groups.items()
        if n.startswith('backbone.') and not n.startswith('backbone.norm3')
    )


def test_a_custom_lr_mult_is_scaled_too(swin_detector):
    wrapper = build_optim_wrapper(
        swin_detector,
        optim_cfg(custom_keys={'patch_embed': dict(lr_mult=0.5)}),
    )
    group = groups_by_name(swin_detector, wrapper)[
        'backbone.patch_embed.projection.weight'
    ]
    assert group['lr'] == pytest.approx(LR * 0.5 * RATE**9)


def test_swin_v2_small_layer_ids():
    depths = [2, 2, 18, 2]
    assert swin_v2_layer_id('patch_embed.projection.weight', depths) == 0
    assert swin_v2_layer_id('stages.0.blocks.0.norm1.weight', depths) == 1
    assert swin_v2_layer_id('stages.2.blocks.17.norm2.bias', depths) == 22
    # official layers.2.downsample = mmpretrain stages.3.downsample
    assert swin_v2_layer_id('stages.3.downsample.norm.weight', depths) == 22
    assert (
        swin_v2_layer_id('stages.3.blocks.1.ffn.layers.1.bias', depths) == 24
    )
    assert swin_v2_layer_id('norm3.weight', depths) == 25


def test_other_backbones_raise():
    init_default_scope('mmdet')
    resnet_detector = MODELS.build(tiny_ia_detr_cfg())
    with pytest.raises(TypeError, match='SwinTransformerV2 layout'):
        build_optim_wrapper(resnet_detector, optim_cfg())


@pytest.mark.parametrize('rate', [None, 0, 1.5, True])
def test_invalid_rate_raises(swin_detector, rate):
    cfg = optim_cfg()
    if rate is None:
        del cfg['paramwise_cfg']['layer_decay_rate']
    else:
        cfg['paramwise_cfg']['layer_decay_rate'] = rate
    with pytest.raises(ValueError, match='layer_decay_rate'):
        build_optim_wrapper(swin_detector, cfg)
