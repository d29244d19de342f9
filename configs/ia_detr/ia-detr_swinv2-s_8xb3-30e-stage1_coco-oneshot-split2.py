# Stage 1 on one-shot COCO, split 2: the split-1 stage-1 config with the
# split changed.
_base_ = './ia-detr_swinv2-s_8xb3-30e-stage1_coco-oneshot-split1.py'

train_dataloader = val_dataloader = test_dataloader = dict(
    dataset=dict(split='coco2')
)
