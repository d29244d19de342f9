# Source training for TMT on ISPRS Potsdam (mmseg tiles): the protocol of
# ../_base_/protocols/source_vit-base-p16-upernet.py.
_base_ = [
    '../_base_/protocols/source_vit-base-p16-upernet.py',
    'mmseg::_base_/datasets/potsdam.py',
]
model = dict(
    decode_head=dict(num_classes=6),
    auxiliary_head=dict(num_classes=6),
)
