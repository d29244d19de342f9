# IA-DETR's schedule (the official flags of configs/stage2_*.sh in github
# Bissmella/IA-DETR; optimizer groups from get_layerwise_param_dict in its
# util/misc.py, inherited from Plain-DETR):
# - AdamW, lr 2e-4, weight decay 0.05, gradient clipping at norm 0.1;
# - layer-wise lr decay 0.9 over the Swin V2 backbone (the official numbering,
#   LayerDecayOptimWrapperConstructor);
# - no weight decay on normalisation layers, biases (Swin V2's q_bias and
#   v_bias included), the BoxRPB MLPs, Swin V2's continuous position-bias
#   MLPs and logit scales, and the level embedding (the official
#   wd_norm_names with wd_norm_mult 0);
# - linear warm-up over the first 1000 iterations, lr x 0.1 from the 12th
#   epoch (epoch index 11) on; 12 epochs (the official stage-2 script runs
#   14, with the lr drop after 11);
# - the backbone is frozen from epoch index 2 on (FreezeBackboneHook).
# Batch 16 in total (8 GPUs x 2 images, the official --batch_size 16).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.9,
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
)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000
    ),
    # no `end`: runs to the last epoch whatever max_epochs is
    dict(type='MultiStepLR', by_epoch=True, milestones=[11], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
custom_hooks = [dict(type='FreezeBackboneHook', start_epoch=2)]
# Every parameter that requires a gradient gets one (stage 1 freezes the
# backbone before the DDP wrap; FreezeBackboneHook rebuilds the wrapper
# without it): no search for unused parameters, no all-reduce of the frozen.
find_unused_parameters = False
# lr 2e-4 is for 16 images per step (8 GPUs x 2); set enable=True to scale it
auto_scale_lr = dict(enable=False, base_batch_size=16)
