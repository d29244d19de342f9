# IA-DETR with an mmdet ResNet-50 (cut at stride 16, ImageNet weights) on
# one-shot PASCAL VOC: the Swin V2-S recipe of voc_oneshot.py (stage 2,
# 12 epochs, backbone frozen from epoch index 2) trained directly from the
# ImageNet backbone; for a stage-1 start, train
# ia_detr_swinv2-s_30e_voc_oneshot_stage1.py with this model and set
# load_from.
_base_ = [
    '../_base_/models/ia_detr_r50.py',
    '../_base_/datasets/voc_oneshot.py',
    '../_base_/schedules/ia_detr_12e.py',
    '../_base_/runtime/mmdet.py',
]
custom_imports = dict(imports=['xattn_mm.det'], allow_failed_imports=False)

# ---- frequently modified ----
load_from = None
max_epochs = 12
batch_size = 2  # per GPU; the lr is for 8 GPUs x 2
lr = 2e-4
# -----------------------------

train_dataloader = dict(batch_size=batch_size)
train_cfg = dict(max_epochs=max_epochs)
# ResNet backbones have no layer-wise decay in the official code; its default
# backbone lr is 0.1x (--lr_backbone 2e-5).
optim_wrapper = dict(
    optimizer=dict(lr=lr),
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
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3)
)
visualizer = dict(
    type='OneShotDetLocalVisualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer',
)
