# Stage 1 of the official IA-DETR recipe on COCO, split 2 ("upretrain",
# configs/stage1_coco.sh in github Bissmella/IA-DETR), as
# ia_detr_swinv2-s_30e_voc_oneshot_stage1.py: random-patch exemplars, frozen
# backbone, train2017 images holding a seen class of the split, 30 epochs,
# 24 images per step (the official --batch_size 24: 8 GPUs x 3).
_base_ = './coco_oneshot_split1.py'

load_from = None
max_epochs = 30
batch_size = 3  # per GPU
split = 'coco2'
model = dict(freeze_backbone=True)
train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(
        split=split,
        pipeline={{_base_.stage1_train_pipeline}},
        exemplar_pipeline={{_base_.stage1_exemplar_pipeline}},
    ),
)
val_dataloader = dict(dataset=dict(split=split))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = []  # the backbone is frozen throughout
auto_scale_lr = dict(base_batch_size=24)
