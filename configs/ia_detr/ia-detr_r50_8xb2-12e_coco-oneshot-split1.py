# IA-DETR with an mmdet ResNet-50 on one-shot COCO, split 1: the recipe of
# ia-detr_r50_8xb2-12e_voc-oneshot.py on the COCO data.
_base_ = [
    '../_base_/models/ia_detr_r50.py',
    '../_base_/datasets/coco_oneshot.py',
    '../_base_/schedules/ia_detr_r50_12e.py',
    '../_base_/runtime/mmdet.py',
]
