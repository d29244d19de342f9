# Stage 1 of the official IA-DETR recipe on COCO, split 1 ("upretrain",
# configs/stage1_coco.sh in github Bissmella/IA-DETR), as on VOC
# (ia-detr_swinv2-s_8xb2-30e-stage1_voc-oneshot.py): random-patch
# exemplars, frozen backbone, train2017 images holding a seen class of the
# split, 30 epochs, 24 images per step (the official --batch_size 24: 8 GPUs
# x 3).
_base_ = './ia-detr_swinv2-s_8xb2-12e_coco-oneshot-split1.py'

load_from = None
model = _base_.stage1_model
train_dataloader = dict(
    batch_size=3,
    dataset=_base_.stage1_train_dataset,
)
train_cfg = dict(max_epochs=30, val_interval=30)
custom_hooks = []  # the backbone is frozen throughout
auto_scale_lr = dict(base_batch_size=24)
