# IA-DETR with the official backbone (docs/ia_detr.md, "Backbones"): Swin
# V2-S with a global last stage ("swin_v2_small_window12to16_2global"), its
# stride-32 output upsampled to stride 16, 6 pre-norm decoder layers of
# indirect attention with BoxRPB (256 dims, 8 heads, 2048 FFN, BoxRPB hidden
# 512, linear deltas), two-stage proposals at strides 8..64, 300 one-to-one
# + 1500 one-to-many queries (k = 6), focal / L1 / GIoU losses 2 / 5 / 2.
# Official flags: configs/stage2_pascalvoc.sh in github Bissmella/IA-DETR.
#
# The backbone starts from the Swin V2-S MIM-pretrained weights (Plain-DETR's
# swinv2_small_1k_500k_mim_pt.pth) in mmpretrain's SwinTransformerV2 layout
# (keys `backbone.*`); nothing is downloaded.
pretrained = 'checkpoints/swinv2_small_1k_500k_mim_pt_mmpretrain.pth'
ln = dict(type='LN', eps=1e-6)  # the official LayerNorms
# IADETR and its parts (xattn_mm.det), GlobalSwinTransformerV2 (xattn_mm.cls)
custom_imports = dict(
    imports=['xattn_mm.det', 'xattn_mm.cls'], allow_failed_imports=False
)
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
        # the stride-32 stage, upsampled, must line up with the canvas
        pad_size_divisor=32,
    ),
    backbone=dict(
        type='mmpretrain.GlobalSwinTransformerV2',
        arch='small',
        window_size=16,
        pretrained_window_sizes=[12, 12, 12, 6],
        drop_path_rate=0.1,
        out_indices=(3,),
        pad_small_map=True,
        norm_cfg=ln,
        patch_cfg=dict(norm_cfg=ln),
        stage_cfgs=dict(
            block_cfgs=dict(norm_cfg=ln),
            downsample_cfg=dict(use_post_norm=True, norm_cfg=ln),
        ),
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.'
        ),
    ),
    neck=dict(
        type='SequentialNeck',
        necks=[
            # stride 32 -> 16, 768 -> 384 channels
            dict(type='TransposedConvUpsample', in_channels=768),
            dict(
                type='ChannelMapper',
                in_channels=[384],
                kernel_size=1,
                out_channels=256,
                bias=True,
                act_cfg=None,
                norm_cfg=dict(type='GN', num_groups=32),
                num_outs=1,
            ),
        ],
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
        sync_cls_avg_factor=True,
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

# Stage 1 as the official "upretrain" (merged by the stage-1 leaves): the
# backbone frozen throughout, a second logit channel for the base-class boxes
# (RandomPatchExemplar(base_boxes=True)) and the contrastive loss on the
# matched queries (tau 0.5, weight 2, 128-d projections; docs/ia_detr.md).
stage1_model = dict(
    freeze_backbone=True,
    bbox_head=dict(num_classes=2, contrastive_cfg=dict()),
)
