# Source training for TMT on LoveDA Urban: the protocol of
# ../_base_/protocols/source_vit-base-p16-upernet.py.
_base_ = [
    '../_base_/protocols/source_vit-base-p16-upernet.py',
    '../_base_/datasets/loveda_urban.py',
]
model = dict(
    decode_head=dict(num_classes=7),
    auxiliary_head=dict(num_classes=7),
)
