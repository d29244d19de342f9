# Stage 1 of the demo: random-patch pretraining on the synthetic images.
_base_ = './ia-detr_r18-s8_1xb8-8e_synthetic-oneshot.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomPatchExemplar', min_size=12, exemplar_size=(64, 64)),
    dict(type='PackOneShotInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root={{_base_.data_root}},
        metainfo=dict(classes={{_base_.classes}}),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/train/'),
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
    )
)
