# The DACSM-adapted backbone of this project, shared by its two leaves: the
# DAT of a DACSM VisDA-2017 run (DeiT-B/16, synthetic -> real), exported
# with tools/model_converters/dacsm_to_plain.py, as a plain mmpretrain
# VisionTransformer (the DAT's source / cross branches exist only while
# DACSM trains) that outputs the four levels TMT's neck and UperNet read.
dacsm_checkpoint = 'checkpoints/dacsm_deit-base-p16_visda2017_plain.pth'
dacsm_backbone = dict(
    _delete_=True,
    type='mmpretrain.VisionTransformer',
    arch='deit-base',
    img_size=512,
    patch_size=16,
    drop_path_rate=0.1,
    out_type='featmap',
    out_indices=(3, 5, 7, 11),
    final_norm=False,
    interpolate_mode='bicubic',
    init_cfg=dict(
        type='Pretrained', checkpoint=dacsm_checkpoint, prefix='backbone.'
    ),
)
# mmpretrain names its LayerNorms ln1 / ln2 (mmseg's ViT: norm1 / norm2).
no_decay_on_ln = dict(ln1=dict(decay_mult=0.0), ln2=dict(decay_mult=0.0))
