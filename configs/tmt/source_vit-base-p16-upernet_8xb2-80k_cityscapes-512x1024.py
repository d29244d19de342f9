# Source training for TMT on Cityscapes (train, fine annotations): the
# protocol of ../_base_/protocols/source_vit-base-p16-upernet.py.
_base_ = [
    '../_base_/protocols/source_vit-base-p16-upernet.py',
    'mmseg::_base_/datasets/cityscapes.py',
]
model = dict(
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19),
)
