# Source training for TMT on GTA5 (all 24,966 images): the protocol of
# ../_base_/protocols/source_vit-base-p16-upernet.py.
_base_ = [
    '../_base_/protocols/source_vit-base-p16-upernet.py',
    '../_base_/datasets/gta5.py',
]
model = dict(
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19),
)
