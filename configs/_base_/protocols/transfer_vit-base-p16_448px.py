# Transfer learning on fine-grained benchmarks as StochCA runs it: ViT-B/16
# at 448 px (resize to 550 x 550, random / centre crop 448), batch 16, AdamW
# lr 5e-4 * batch / 512, weight decay 0.05, 100 warm-up iterations then
# cosine decay to 0 over 10k iterations, evaluation every 200, on a
# class-stratified fraction of the training set (StratifiedSubset, seed 0).
# Plain fine-tuning; the leaves under configs/stoch_ca/transfer/ name the
# dataset and the ratio, their stochca_* twins swap in StochCA and the
# l2sp_* / bss_* variants add a regulariser.
_base_ = [
    '../runtime/mmpretrain.py',
    '../models/vit-base-p16_in1k-pretrained.py',
]

# ---- frequently modified ----
num_classes = 200
ratio = 1.0
batch_size = 16
train_set = dict(type='CUB', data_root='data/CUB_200_2011', split='train')
test_set = dict(type='CUB', data_root='data/CUB_200_2011', split='test')
# -----------------------------

model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    # The position embedding resized to 448 px as the official code does
    # (torchvision, align_corners=True): vit_to_mmpretrain.py --img-size 448.
    backbone=dict(
        img_size=448,
        init_cfg=dict(
            checkpoint='checkpoints/vit-base-p16_torchvision-in1k_448px.pth'
        ),
    ),
    head=dict(num_classes=num_classes),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(550, 550)),
    dict(type='RandomCrop', crop_size=448),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(550, 550)),
    dict(type='CenterCrop', crop_size=448),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='StratifiedSubset',
        ratio=ratio,
        seed=0,
        dataset=dict(pipeline=train_pipeline, **train_set),
    ),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=test_pipeline, **test_set),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(
        type='AdamW', lr=5e-4 * batch_size / 512, weight_decay=0.05
    ),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, end=100),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=100,
        end=10000,
        eta_min=0.0,
    ),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=10000, val_interval=200)
val_cfg = dict()
test_cfg = dict()
# --auto-scale-lr keeps lr = 5e-4 * (total batch) / 512 on any GPU count.
auto_scale_lr = dict(base_batch_size=batch_size)
default_hooks = dict(checkpoint=dict(interval=10000, max_keep_ckpts=1))

# Regularised fine-tuning, merged by the l2sp_ / bss_ leaves. L2-SP
# replaces weight decay on the pretrained backbone.
l2sp = dict(
    type='RegularizedImageClassifier',
    regularizers=dict(l2sp=dict(type='L2SPRegularizer', loss_weight=0.01)),
)
l2sp_optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(decay_mult=0.0)})
)
bss = dict(
    type='RegularizedImageClassifier',
    regularizers=dict(
        bss=dict(type='BSSRegularizer', loss_weight=0.001, num_singular=1)
    ),
)
