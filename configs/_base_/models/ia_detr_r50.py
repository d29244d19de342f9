# IA-DETR with an mmdet ResNet-50 cut at stride 16 (layer3, 1024 channels;
# docs/ia_detr.md, "Backbones"), DETR-style: frozen BatchNorm (the official
# ResNet's FrozenBatchNorm2d), stem and first stage frozen. Everything else
# is the official Swin V2-S model (./ia_detr_swinv2-s.py): its input
# projection on the 1024 channels, its transformer and losses, and its
# custom_imports (xattn_mm.cls registers the exemplar colour jitter).
_base_ = './ia_detr_swinv2-s.py'

# The backbone starts from torchvision's ImageNet ResNet-50 weights (same key
# names as mmdet's ResNet) at a local path; nothing is downloaded.
pretrained = 'checkpoints/resnet50-0676ba61.pth'
model = dict(
    data_preprocessor=dict(pad_size_divisor=16),
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2,),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(_base_.model.neck.necks[1], _delete_=True, in_channels=[1024]),
)
