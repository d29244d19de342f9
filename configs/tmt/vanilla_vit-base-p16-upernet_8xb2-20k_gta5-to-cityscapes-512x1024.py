# Vanilla fine-tuning GTA5 (all 24,966 images) -> Cityscapes: the source model
# fine-tuned on the target training set for 20k iterations, mIoU on the target
# validation set. Its TMT twin is the tmt_* config of the same name.
_base_ = [
    '../_base_/protocols/finetune_vit-base-p16-upernet.py',
    'mmseg::_base_/datasets/cityscapes.py',
]
model = dict(
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19),
)
load_from = (
    'work_dirs/source_vit-base-p16-upernet_8xb2-80k_gta5-512x1024/'
    'iter_80000.pth'
)
