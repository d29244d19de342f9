# IA-DETR with an mmdet ResNet-50 (cut at stride 16, ImageNet weights) on
# one-shot PASCAL VOC: the Swin V2-S recipe of
# ia-detr_swinv2-s_8xb2-12e_voc-oneshot.py (stage 2, 12 epochs, backbone
# frozen from epoch index 2) trained directly from the ImageNet backbone;
# for a stage-1 start, train ia-detr_swinv2-s_8xb2-30e-stage1_voc-oneshot.py
# with this model and set load_from.
_base_ = [
    '../_base_/models/ia_detr_r50.py',
    '../_base_/datasets/voc_oneshot.py',
    '../_base_/schedules/ia_detr_r50_12e.py',
    '../_base_/runtime/mmdet.py',
]
