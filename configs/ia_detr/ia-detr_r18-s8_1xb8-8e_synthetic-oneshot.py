# IA-DETR on the embedded synthetic one-shot dataset (the README's
# `make demo`), sized to train on 2 CPU cores in about 6 minutes. Make the
# data with:
#   python tools/data/generate_synthetic_oneshot.py data/synthetic_oneshot
# A ResNet-18 stem cut at stride 8 trained from scratch, the exemplar-aware
# encoder (one layer) and three indirect-attention decoder layers. Without the
# encoder, indirect attention alone does not learn to use the exemplar within
# this budget (docs/ia_detr.md, "The embedded demo"). The model is the
# ResNet one (configs/_base_/models/ia_detr_r50.py) scaled down; its heads,
# losses and matcher are the paper's. Also reachable as synthetic_oneshot.py.
_base_ = [
    '../_base_/models/ia_detr_r50.py',
    '../_base_/runtime/mmdet.py',
]
custom_imports = dict(imports=['xattn_mm.det'])  # no mmpretrain part

# ---- frequently modified ----
data_root = 'data/synthetic_oneshot/'
image_size = 128
exemplar_size = (64, 64)
max_epochs = 8
lr = 1e-3
batch_size = 8
embed_dims = 64
# -----------------------------

model = dict(
    num_queries=30,
    num_queries_one2many=60,
    feat_stride=8,
    proposal_strides=(8, 16, 32),
    data_preprocessor=dict(pad_size_divisor=8),
    backbone=dict(
        depth=18,
        base_channels=32,
        num_stages=2,
        strides=(1, 2),
        dilations=(1, 1),
        out_indices=(1,),
        frozen_stages=-1,
        norm_cfg=dict(requires_grad=True),
        norm_eval=False,
        init_cfg=None,  # from scratch
    ),
    neck=dict(
        in_channels=[64],
        out_channels=embed_dims,
        norm_cfg=dict(num_groups=16),
    ),
    encoder=dict(
        num_layers=1,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=4),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256),
        ),
    ),
    positional_encoding=dict(num_feats=embed_dims // 2),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4),
            cross_attn_cfg=dict(
                embed_dims=embed_dims, num_heads=4, rpb_hidden_dims=64
            ),
            ffn_cfg=dict(feedforward_channels=256),
        ),
    ),
    bbox_head=dict(
        embed_dims=embed_dims,
        k_one2many=2,
    ),
    test_cfg=dict(max_per_img=30),
)

exemplar_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CropExemplar'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=exemplar_size, keep_ratio=False),
]
exemplar_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CropExemplar'),
    dict(type='Resize', scale=exemplar_size, keep_ratio=False),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackOneShotInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackOneShotInputs'),
]
# xattn_mm.det.datasets.synthetic_oneshot.SYNTHETIC_CLASSES
classes = (
    'red square',
    'orange disk',
    'yellow triangle',
    'chartreuse square',
    'green disk',
    'spring triangle',
    'cyan square',
    'azure disk',
    'blue triangle',
    'violet square',
    'magenta disk',
    'rose triangle',
)
coco = dict(
    type='CocoDataset',
    data_root=data_root,
    metainfo=dict(classes=classes),
    filter_cfg=dict(filter_empty_gt=False),
    pipeline=[],
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='OneShotDataset',
        split='synthetic',
        dataset=dict(
            coco,
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='images/train/'),
        ),
        pipeline=train_pipeline,
        exemplar_pipeline=exemplar_train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OneShotDataset',
        split='synthetic',
        test_mode=True,
        test_classes='all',
        dataset=dict(
            coco,
            ann_file='annotations/instances_val.json',
            data_prefix=dict(img='images/val/'),
            test_mode=True,
        ),
        pipeline=test_pipeline,
        exemplar_pipeline=exemplar_test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='OneShotCocoMetric')
test_evaluator = val_evaluator

train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs
)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, end=100),
    dict(
        type='MultiStepLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        milestones=[max_epochs - 1],
        gamma=0.1,
    ),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs),
)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=batch_size)
