# Unsupervised domain adaptation as CDTrans trains it, with the DACSM model
# (DAT backbone + CSM head): DeiT-S/16 at 224 px, SGD (momentum 0.9, weight
# decay 1e-4, biases at 2x lr), batch 64, gradient norm clipped at 1.0,
# linear warm-up from 0.01x over 10 epochs then cosine to 0.002x, evaluation
# on the target set every epoch. This file is stage 1 (source only, 10
# epochs); the stage-2 leaves under configs/dacsm/ swap in the paired
# dataset, 40 epochs and the pseudo-label hook. CDTrans list files name
# "relative/path label" per line, relative to data_root.
_base_ = ['../runtime/mmpretrain.py']

# ---- frequently modified ----
data_root = 'data/office31'
source_list = 'amazon_list.txt'
eval_list = 'amazon_list.txt'
classes = None  # names for the per-class table; labels come from the lists
num_classes = 31
lr = 0.008
batch_size = 64  # in total (one GPU x 64; scale lr with auto_scale_lr)
# mmpretrain's DeiT-S ImageNet-1k checkpoint (model zoo: deit-small).
pretrained = 'checkpoints/deit-small_in1k.pth'
# The DeiT-B leaves merge this into the model (DeiT-B ImageNet-1k).
deit_base = dict(
    backbone=dict(
        arch='deit-base',
        init_cfg=dict(checkpoint='checkpoints/deit-base_in1k.pth'),
    ),
    head=dict(in_channels=768),
)
# -----------------------------

model = dict(
    type='UDAClassifier',
    data_preprocessor=dict(
        type='UDADataPreprocessor',
        num_classes=num_classes,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True,
    ),
    backbone=dict(
        type='DAT',
        arch='deit-small',
        img_size=224,
        patch_size=16,
        drop_path_rate=0.1,
        # Beneficial noise in the cross-attention (training only).
        noise_std=0.1,
        noise_placement='logits',
        noise_schedule='constant',
        cosine_attention=False,
        # The cross stream's residual starts from the source tokens (the
        # DACSM paper, Fig. 3); 'target' is CDTrans's. With the class-token
        # output only the patch tokens differ (docs/protocols.md).
        cross_residual='source',
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.'
        ),
    ),
    head=dict(
        type='CSMHead',
        num_classes=num_classes,
        in_channels=384,
        num_subcenters=3,
        scale=16.0,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'
        ),
    ),
    # Cross-scale matching: source images zoomed by these factors, one
    # sub-center per factor.
    scales=(0.5, 1.0, 1.5),
    scale_sampling='random',
    pseudo_label_branch='target',
    loss_weights=dict(source=1.0, target=1.0, distill=1.0),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256)),
    dict(type='RandomCrop', crop_size=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=False,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        ann_file=source_list,
        classes=classes,
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        ann_file=eval_list,
        classes=classes,
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
# accuracy/mean_class is VisDA-2017's score, accuracy/overall the others'.
val_evaluator = dict(type='MeanClassAccuracy')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=False
    ),
    paramwise_cfg=dict(bias_lr_mult=2.0),
    clip_grad=dict(max_norm=1.0),
)
warmup_epochs = 10
max_epochs = 10
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
    ),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64, enable=False)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=True, interval=1, max_keep_ckpts=1),
)
log_processor = dict(by_epoch=True)

# Stage 2 (adaptation), used by the stage-2 leaves: 40 epochs from the
# stage-1 checkpoint, pseudo-labels and pairs refreshed every 10 epochs,
# and the noise schedule's progress.
stage2_epochs = 40
stage2_param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
    ),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=warmup_epochs,
        end=stage2_epochs,
        T_max=stage2_epochs - warmup_epochs,
        eta_min_ratio=0.002,
    ),
]
stage2_hooks = [
    dict(type='PseudoLabelHook', interval=10, batch_size=128, num_workers=8),
    dict(type='NoiseScheduleHook'),
]
