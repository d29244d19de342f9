# IA-DETR on one-shot PASCAL VOC with a StochCA-wrapped mmpretrain ViT-B/16
# backbone (projects/ia_detr_stoch_ca/README.md). The IA-DETR side is
# configs/ia_detr/ia-detr_r50_8xb2-12e_voc-oneshot.py (data, protocol, decoder,
# losses, schedule); only the backbone, its neck and the backbone freezing
# change. Cross-host: the backbone types live in mmpretrain's registry
# ('mmpretrain.' prefix) and both xattn_mm subpackages are imported.
_base_ = ['../../../configs/ia_detr/ia-detr_r50_8xb2-12e_voc-oneshot.py']
custom_imports = dict(
    imports=['xattn_mm.det', 'xattn_mm.cls'], allow_failed_imports=False
)

# ---- frequently modified ----
# ImageNet ViT-B/16 in mmpretrain's key layout: convert torchvision's
# vit_b_16-c867db91.pth with tools/model_converters/vit_to_mmpretrain.py.
pretrained = 'checkpoints/vit-base-p16_torchvision-in1k.pth'
stoch_ca_p = 0.1  # per-block probability of cross-attention to the teacher
# -----------------------------

model = dict(
    data_preprocessor=dict(pad_size_divisor=16),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.StochCA',
        p=stoch_ca_p,
        draw='batch',
        backbone=dict(
            type='mmpretrain.VisionTransformer',
            arch='b',
            img_size=512,
            patch_size=16,
            drop_path_rate=0.1,
            out_type='featmap',
            out_indices=-1,  # the last block
            final_norm=True,
            interpolate_mode='bicubic',
            init_cfg=dict(
                type='Pretrained', checkpoint=pretrained, prefix='backbone.'
            ),
        ),
    ),
    # The ViT's last block at stride 16 -> the 1x1 conv + GroupNorm input
    # projection (one feature level, feat_stride 16).
    neck=dict(in_channels=[768]),
)
# The official recipe freezes the backbone from epoch index 2 so that it keeps
# its pretrained, class-agnostic features; StochCA keeps them instead by
# cross-attending to the frozen pretrained copy, so the backbone trains
# throughout (at the inherited 0.1x backbone lr).
custom_hooks = []
find_unused_parameters = False
