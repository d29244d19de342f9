# IA-DETR with an mmdet ResNet-50 cut at stride 16 (layer3, 1024 channels;
# docs/ia_detr.md, "Backbones"), DETR-style: frozen BatchNorm (the official
# ResNet's FrozenBatchNorm2d), stem and first stage frozen. The transformer
# and losses are those of the official Swin V2-S model
# (configs/_base_/models/ia_detr_swinv2-s.py).
#
# The backbone starts from torchvision's ImageNet ResNet-50 weights (same key
# names as mmdet's ResNet) at a local path; nothing is downloaded.
pretrained = 'checkpoints/resnet50-0676ba61.pth'
model = dict(
    type='IADETR',
    num_queries=300,
    num_queries_one2many=1500,
    feat_stride=16,
    proposal_strides=(8, 16, 32, 64),
    freeze_backbone=False,
    data_preprocessor=dict(
        type='OneShotDetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=16,
    ),
    backbone=dict(
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
    neck=dict(
        type='ChannelMapper',
        in_channels=[1024],
        kernel_size=1,
        out_channels=256,
        bias=True,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=1,
    ),
    positional_encoding=dict(num_feats=128, normalize=True, offset=-0.5),
    decoder=dict(
        type='IADETRDecoder',
        num_layers=6,
        look_forward_twice=True,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, num_heads=8),
            cross_attn_cfg=dict(
                embed_dims=256,
                num_heads=8,
                rpb_hidden_dims=512,
                rpb_delta_mode='linear',
            ),
            ffn_cfg=dict(feedforward_channels=2048, ffn_drop=0.0),
        ),
    ),
    bbox_head=dict(
        type='IADETRHead',
        num_classes=1,
        embed_dims=256,
        num_pred_layer=7,  # 6 decoder layers + the proposals
        as_two_stage=True,
        sync_cls_avg_factor=True,
        num_queries_one2one=300,
        k_one2many=6,
        lambda_one2many=1.0,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=2.0,
        ),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
    ),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0),
            ],
        )
    ),
    test_cfg=dict(max_per_img=100),  # the official --topk
)
