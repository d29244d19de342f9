# Stage 1 of the official IA-DETR recipe on PASCAL VOC ("upretrain",
# configs/stage1_pascalvoc.sh in github Bissmella/IA-DETR): the exemplar is
# a random patch of the target and the only ground truth is its box
# (RandomPatchExemplar); the backbone stays frozen. The target images are
# those of stage 2 (VOC2007 + VOC2012 trainval images holding a seen class);
# 30 epochs, the stage-2 optimizer, lr x 0.1 from epoch index 11. The
# official stage 1 also trains base-class boxes on a second logit channel
# with a contrastive loss; xattn_mm trains on the patch box only
# (docs/ia_detr.md, difference 4). Validation: the one-shot test of
# stage 2, once at the end.
_base_ = './ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py'

load_from = None
model = dict(freeze_backbone=True)
train_dataloader = dict(
    dataset=dict(
        pipeline=_base_.stage1_train_pipeline,
        exemplar_pipeline=_base_.stage1_exemplar_pipeline,
    )
)
train_cfg = dict(max_epochs=30, val_interval=30)
custom_hooks = []  # the backbone is frozen throughout
