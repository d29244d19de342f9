# Vanilla fine-tuning LoveDA Urban -> LoveDA Rural: the source model fine-tuned
# on the target training set for 20k iterations, mIoU on the target validation
# set. Its TMT twin is the tmt_* config of the same name.
_base_ = [
    '../_base_/protocols/finetune_vit-base-p16-upernet.py',
    '../_base_/datasets/loveda_rural.py',
]
model = dict(
    decode_head=dict(num_classes=7),
    auxiliary_head=dict(num_classes=7),
)
load_from = (
    'work_dirs/source_vit-base-p16-upernet_8xb2-80k_loveda-urban-512x512/'
    'iter_80000.pth'
)
