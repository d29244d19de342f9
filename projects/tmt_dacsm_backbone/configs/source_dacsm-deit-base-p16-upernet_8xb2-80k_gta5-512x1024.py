# Step 3 of projects/tmt_dacsm_backbone/README.md: the TMT source model on
# GTA5, configs/tmt's source leaf with the DACSM-adapted DeiT-B/16 backbone
# in place of the ImageNet ViT-B/16.
_base_ = [
    '../../../configs/tmt/source_vit-base-p16-upernet_8xb2-80k_gta5-512x1024.py',
    './_base_/dacsm_backbone.py',
]
custom_imports = dict(
    imports=['xattn_mm.seg', 'mmpretrain.models'], allow_failed_imports=False
)
model = dict(backbone={{_base_.dacsm_backbone}})
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.no_decay_on_ln}}))
