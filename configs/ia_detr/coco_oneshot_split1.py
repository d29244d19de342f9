# IA-DETR (arXiv 2509.26015) on one-shot COCO, split 1: the official
# recipe's stage 2 with the official Swin V2-S backbone, fine-tuned from the
# stage-1 ("upretrain") checkpoint of
# ia_detr_swinv2-s_30e_coco_oneshot_split1_stage1.py. Train on train2017
# pairs of the 60 seen classes, test on val2017 pairs of the 20 unseen
# classes of the split (five exemplar draws, AP50).
# Commands, data and weights: configs/ia_detr/README.md.
_base_ = [
    '../_base_/models/ia_detr_swinv2-s.py',
    '../_base_/datasets/coco_oneshot.py',
    '../_base_/schedules/ia_detr_12e.py',
    '../_base_/runtime/mmdet.py',
]
custom_imports = dict(
    imports=['xattn_mm.det', 'xattn_mm.cls'], allow_failed_imports=False
)

# ---- frequently modified ----
# the stage-1 checkpoint to start from (None: from the pretrained backbone)
load_from = (
    'work_dirs/ia_detr_swinv2-s_30e_coco_oneshot_split1_stage1/epoch_30.pth'
)
max_epochs = 12  # the official stage-2 script runs 14 (lr drop after 11)
batch_size = 2  # per GPU; the lr is for 8 GPUs x 2
lr = 2e-4
split = 'coco1'
# -----------------------------

train_dataloader = dict(batch_size=batch_size, dataset=dict(split=split))
val_dataloader = dict(dataset=dict(split=split))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=lr))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3)
)
visualizer = dict(
    type='OneShotDetLocalVisualizer',
    vis_backends=[dict(type='LocalVisBackend')],
    name='visualizer',
)
