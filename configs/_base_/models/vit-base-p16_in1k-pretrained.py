# ViT-B/16 classifier fine-tuned from torchvision's ImageNet-1k weights
# (convert vit_b_16-c867db91.pth with
# tools/model_converters/vit_to_mmpretrain.py), the StochCA paper's backbone.
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=1000,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True,
    ),
    backbone=dict(
        type='VisionTransformer',
        arch='b',
        img_size=224,
        patch_size=16,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/vit-base-p16_torchvision-in1k.pth',
            prefix='backbone.',
        ),
    ),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
    ),
)
# StochCA (p = 0.1, the paper's default) around a config's backbone; the
# stochca_ leaves merge ``dict(backbone=dict(stoch_ca, backbone=<theirs>))``.
stoch_ca = dict(_delete_=True, type='StochCA', p=0.1)
