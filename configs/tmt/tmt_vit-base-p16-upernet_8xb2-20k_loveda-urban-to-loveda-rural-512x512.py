# TMT twin of the vanilla_* config of the same name: the same fine-tuning with
# the TMA neck and ACTE; the frozen source model is the checkpoint fine-tuning
# starts from.
_base_ = [
    '../_base_/protocols/tmt_vit-base-p16-upernet.py',
    '../_base_/datasets/loveda_rural.py',
]
load_from = (
    'work_dirs/source_vit-base-p16-upernet_8xb2-80k_loveda-urban-512x512/'
    'iter_80000.pth'
)
model = dict(
    decode_head=dict(num_classes=7),
    auxiliary_head=dict(num_classes=7),
    source_checkpoint=load_from,
)
