# IA-DETR (arXiv 2509.26015) on one-shot PASCAL VOC: the official recipe's
# stage 2 with the official Swin V2-S backbone, fine-tuned from the stage-1
# ("upretrain") checkpoint of ia-detr_swinv2-s_8xb2-30e-stage1_voc-oneshot.py.
# Train on VOC2007 + VOC2012 trainval pairs of the 16 seen classes, test on
# VOC2007 test pairs of the 4 unseen classes (five exemplar draws, AP50);
# 8 GPUs x 2 images, 12 epochs. Also reachable as voc_oneshot.py.
# Commands, data and weights: configs/ia_detr/README.md.
_base_ = [
    '../_base_/models/ia_detr_swinv2-s.py',
    '../_base_/datasets/voc_oneshot.py',
    '../_base_/schedules/ia_detr_12e.py',
    '../_base_/runtime/mmdet.py',
]

# the stage-1 checkpoint to start from (None: from the pretrained backbone)
load_from = (
    'work_dirs/ia-detr_swinv2-s_8xb2-30e-stage1_voc-oneshot/epoch_30.pth'
)
