# Vanilla fine-tuning ISPRS Potsdam (mmseg tiles) -> ISPRS Vaihingen: the
# source model fine-tuned on the target training set for 20k iterations, mIoU
# on the target validation set. Its TMT twin is the tmt_* config of the same
# name.
_base_ = [
    '../_base_/protocols/finetune_vit-base-p16-upernet.py',
    'mmseg::_base_/datasets/vaihingen.py',
]
model = dict(
    decode_head=dict(num_classes=6),
    auxiliary_head=dict(num_classes=6),
)
load_from = (
    'work_dirs/source_vit-base-p16-upernet_8xb2-80k_potsdam-512x512/'
    'iter_80000.pth'
)
