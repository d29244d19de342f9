# One-shot detection data shared by PASCAL VOC (./voc_oneshot.py) and COCO
# (./coco_oneshot.py), which add the split and the image sets: pairs of a
# target image and an exemplar of one of its classes (OneShotDataset),
# five exemplar draws per test pair, AP50 (101-point, as the official
# evaluator's interpolation); docs/protocols.md.
#
# Target pipelines: the official IA-DETR mapper (make_self_det_transforms in
# datasets/dataset_mappers/pascalvoc_dataset_mapper_ix.py; the COCO mapper
# is the same) with mmdet transforms. Training: horizontal flip, then either
# a resize (short side 400 / 480 / 512 / 544, long side at most 512) or a
# resize (short side 400 / 480 / 512), a random crop of 384..512 px per side
# and the first resize again. A short side of 544 with the long side capped
# at 512 always ends with the long side at 512, as 512 does, so (512, 512)
# is listed twice to keep the four choices equally likely. Differences: mmcv
# rounds sizes to the nearest pixel (the official code truncates), and the
# crop keeps boxes of positive area (the official one, area > 1 px^2). Test:
# long side 512. Exemplar pipelines: the official get_query_transforms.
backend_args = None

short_then_cap = [(512, 400), (512, 480), (512, 512), (512, 512)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(
                    type='RandomChoiceResize',
                    scales=short_then_cap,
                    keep_ratio=True,
                )
            ],
            [
                dict(
                    type='RandomChoiceResize',
                    # short side exactly 400 / 480 / 512 (long side free)
                    scales=[(4200, 400), (4200, 480), (4200, 512)],
                    keep_ratio=True,
                ),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 512),
                    allow_negative_crop=True,
                ),
                dict(
                    type='RandomChoiceResize',
                    scales=short_then_cap,
                    keep_ratio=True,
                ),
            ],
        ],
    ),
    dict(type='PackOneShotInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(512, 512), keep_ratio=True),
    # after the resize, so that the boxes stay in original coordinates
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackOneShotInputs'),
]
# torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1) and GaussianBlur([.1, 2.])
# on PIL images, as the official mapper applies them (mmpretrain's, see
# xattn_mm/det/datasets/transforms/exemplar_augment.py)
jitter = dict(
    type='mmpretrain.HueWrapColorJitter',
    brightness=0.4,
    contrast=0.4,
    saturation=0.4,
    hue=0.1,
)
blur = dict(
    type='mmpretrain.GaussianBlur',
    magnitude_range=(0.1, 2.0),
    magnitude_level=10,
    magnitude_std='inf',  # radius uniform in [0.1, 2.0]
    prob=0.5,
)
exemplar_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='CropExemplar'),
    dict(type='Resize', scale=(300, 300), keep_ratio=False, backend='pillow'),
    dict(type='RandomApply', transforms=[jitter], prob=0.3),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomPerspective', distortion_scale=0.5, prob=0.5),
    dict(
        type='RandomGrayscale',
        prob=0.4,
        keep_channels=True,
        channel_weights=(0.114, 0.587, 0.299),
    ),
    blur,
]
exemplar_test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='CropExemplar'),
    dict(type='Resize', scale=(300, 300), keep_ratio=False, backend='pillow'),
]

# Stage-1 pretraining pairs (the official "upretrain", make_self_det_transforms
# and get_query_transforms in data/dataset_mappers/
# pascalvoc_dataset_mapper_up.py): the exemplar is a random patch of the
# target (RandomPatchExemplar), resized to short side 510 / long side at
# most 512 and colour-augmented (jitter p 0.8, grayscale p 0.2, blur p 0.5)
# through a KeyMapper on `exemplar_img`; the target is resized to short side
# 400..640, long side at most 642, without flip. The KeyMapper hides the
# target's boxes (`...`) from the exemplar transforms.
stage1_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomPatchExemplar', min_size=8, base_boxes=True),
    dict(
        type='KeyMapper',
        mapping=dict(img='exemplar_img', gt_bboxes=...),
        auto_remap=True,
        transforms=[
            dict(
                type='Resize',
                scale=(512, 510),
                keep_ratio=True,
                backend='pillow',
            ),
            dict(type='RandomApply', transforms=[jitter], prob=0.8),
            dict(
                type='RandomGrayscale',
                prob=0.2,
                keep_channels=True,
                channel_weights=(0.114, 0.587, 0.299),
            ),
            blur,
        ],
    ),
    dict(
        type='RandomChoiceResize',
        scales=[(642, s) for s in (400, 480, 512, 544, 576, 608, 640)],
        keep_ratio=True,
    ),
    dict(type='PackOneShotInputs'),
]
# OneShotDataset needs an exemplar image; RandomPatchExemplar replaces it.
stage1_exemplar_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='CropExemplar'),
]
# The stage-1 training set: every seen-class box of the target, with its
# class (the base-class targets; OneShotDataset(train_targets=...)).
stage1_train_dataset = dict(
    train_targets='seen_classes',
    pipeline=stage1_train_pipeline,
    exemplar_pipeline=stage1_exemplar_pipeline,
)

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='OneShotDataset',
        pipeline=train_pipeline,
        exemplar_pipeline=exemplar_train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='OneShotDataset',
        test_mode=True,
        test_classes='unseen',
        draws=(0, 1, 2, 3, 4),
        pipeline=test_pipeline,
        exemplar_pipeline=exemplar_test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='OneShotCocoMetric', ap_mode='coco101')
test_evaluator = val_evaluator
