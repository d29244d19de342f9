# Step 4 of projects/tmt_dacsm_backbone/README.md: TMT fine-tuning GTA5 ->
# Cityscapes (configs/tmt's leaf) from this project's source model; the
# frozen source model of ACTE is that checkpoint too.
_base_ = [
    '../../../configs/tmt/'
    'tmt_vit-base-p16-upernet_8xb2-20k_gta5-to-cityscapes-512x1024.py',
    './_base_/dacsm_backbone.py',
]
custom_imports = dict(
    imports=['xattn_mm.seg', 'mmpretrain.models'], allow_failed_imports=False
)
load_from = (
    'work_dirs/source_dacsm-deit-base-p16-upernet_8xb2-80k_gta5-512x1024/'
    'iter_80000.pth'
)
model = dict(
    backbone={{_base_.dacsm_backbone}},
    source_checkpoint=load_from,
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.no_decay_on_ln}}))
