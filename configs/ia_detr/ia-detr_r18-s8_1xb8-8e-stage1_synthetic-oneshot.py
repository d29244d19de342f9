# Stage 1 of the demo: random-patch pretraining on the synthetic images
# holding a seen class, with the base-class targets and the contrastive loss
# of the official stage 1; the demo's backbone starts from scratch, so it is
# trained, not frozen.
_base_ = './ia-detr_r18-s8_1xb8-8e_synthetic-oneshot.py'

model = dict(bbox_head=_base_.stage1_model.bbox_head)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomPatchExemplar',
        min_size=12,
        exemplar_size=(64, 64),
        base_boxes=True,
    ),
    dict(type='PackOneShotInputs'),
]
train_dataloader = dict(
    dataset=dict(train_targets='seen_classes', pipeline=train_pipeline)
)
