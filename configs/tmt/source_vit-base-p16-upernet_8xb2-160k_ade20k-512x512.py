# Source training for TMT on ADE20K, 160k iterations: the protocol of
# ../_base_/protocols/source_vit-base-p16-upernet.py.
_base_ = [
    '../_base_/protocols/source_vit-base-p16-upernet.py',
    'mmseg::_base_/datasets/ade20k.py',
]
model = dict(
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150),
)
# 160k iterations, as ADE20K's mmseg schedule
train_cfg = dict(max_iters=160000)
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=160000),
]
