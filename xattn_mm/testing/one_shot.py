"""Tiny IA-DETR configs and (target, exemplar) batches for tests."""

from typing import List, Sequence, Tuple

import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData


def tiny_ia_detr_cfg(
    decoder_type: str = 'IADETRDecoder',
    num_layers: int = 2,
    embed_dims: int = 32,
    **kwargs,
) -> dict:
    """An IA-DETR config small enough for CPU tests: ResNet-18 with 16 base
    channels cut at stride 16, 2 decoder layers of 32 channels, 10 + 20
    queries.

    Args:
        decoder_type (str): Registered decoder type. Defaults to
            'IADETRDecoder'.
        num_layers (int): Decoder layers. Defaults to 2.
        embed_dims (int): Transformer channels. Defaults to 32.
        **kwargs: Overrides of the detector's top-level keys.

    Returns:
        dict: The model config.
    """
    heads = 4
    decoder = dict(
        type=decoder_type,
        num_layers=num_layers,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=heads),
            cross_attn_cfg=dict(
                embed_dims=embed_dims, num_heads=heads, rpb_hidden_dims=16
            ),
            ffn_cfg=dict(feedforward_channels=64),
        ),
    )
    if decoder_type == 'DoubleCrossAttentionDecoder':
        decoder['num_align_layers'] = 1
    cfg = dict(
        type='IADETR',
        num_queries=10,
        num_queries_one2many=20,
        data_preprocessor=dict(
            type='OneShotDetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=16,
        ),
        backbone=dict(
            type='ResNet',
            depth=18,
            base_channels=16,
            num_stages=3,
            strides=(1, 2, 2),
            dilations=(1, 1, 1),
            out_indices=(2,),
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=False,
        ),
        neck=dict(
            type='ChannelMapper',
            in_channels=[64],
            kernel_size=1,
            out_channels=embed_dims,
            bias=True,
            act_cfg=None,
            norm_cfg=dict(type='GN', num_groups=8),
            num_outs=1,
        ),
        positional_encoding=dict(
            num_feats=embed_dims // 2, normalize=True, offset=-0.5
        ),
        decoder=decoder,
        bbox_head=dict(
            type='IADETRHead',
            num_classes=1,
            embed_dims=embed_dims,
            num_pred_layer=num_layers + 1,
            as_two_stage=True,
            num_queries_one2one=10,
            k_one2many=2,
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
        test_cfg=dict(max_per_img=10),
    )
    cfg.update(kwargs)
    return cfg


def tiny_swin_v2_parts(embed_dims: int = 32, swin_dims: int = 16) -> dict:
    """``backbone``, ``neck`` and ``data_preprocessor`` of the official
    IA-DETR layout, scaled down: mmpretrain's Swin V2 with a global last stage
    (``GlobalSwinTransformerV2``, registered by ``xattn_mm.cls``), its
    stride-32 output upsampled to stride 16 by one transposed convolution,
    then the 1x1 conv + GroupNorm input projection. The canvas is padded to
    a multiple of 32, the deepest stride.

    Args:
        embed_dims (int): Transformer channels. Defaults to 32.
        swin_dims (int): Swin stem channels; the last stage has 8x.
            Defaults to 16.

    Returns:
        dict: Overrides for :func:`tiny_ia_detr_cfg`.
    """
    norm = dict(type='LN', eps=1e-6)  # the official LayerNorms
    base = tiny_ia_detr_cfg(embed_dims=embed_dims)
    return dict(
        data_preprocessor=dict(base['data_preprocessor'], pad_size_divisor=32),
        backbone=dict(
            type='mmpretrain.GlobalSwinTransformerV2',
            arch=dict(
                embed_dims=swin_dims,
                depths=[2, 2, 2, 2],
                num_heads=[1, 2, 2, 4],
                extra_norm_every_n_blocks=0,
            ),
            window_size=4,
            pretrained_window_sizes=[4, 4, 4, 2],
            out_indices=(3,),
            pad_small_map=True,
            norm_cfg=norm,
            patch_cfg=dict(norm_cfg=norm),
            stage_cfgs=dict(
                block_cfgs=dict(norm_cfg=norm),
                downsample_cfg=dict(use_post_norm=True, norm_cfg=norm),
            ),
        ),
        neck=dict(
            type='SequentialNeck',
            necks=[
                dict(type='TransposedConvUpsample', in_channels=8 * swin_dims),
                dict(base['neck'], in_channels=[4 * swin_dims]),
            ],
        ),
    )


def one_shot_batch(
    sizes: Sequence[Tuple[int, int]] = ((64, 80), (48, 64)),
    exemplar_sizes: Sequence[Tuple[int, int]] = ((32, 32), (40, 24)),
    num_boxes: Sequence[int] = (2, 0),
    seed: int = 0,
) -> dict:
    """A collated batch of (target, exemplar) pairs with random images and
    ground-truth boxes (label 0), as a dataloader would give it.

    Args:
        sizes (Sequence[tuple]): (h, w) of each target.
        exemplar_sizes (Sequence[tuple]): (h, w) of each exemplar.
        num_boxes (Sequence[int]): Ground-truth boxes per target.
        seed (int): Random seed.

    Returns:
        dict: ``inputs=dict(target=[...], exemplar=[...])`` and
        ``data_samples``.
    """
    g = torch.Generator().manual_seed(seed)
    targets: List[torch.Tensor] = []
    exemplars: List[torch.Tensor] = []
    samples: List[DetDataSample] = []
    for (h, w), (eh, ew), n in zip(sizes, exemplar_sizes, num_boxes):
        targets.append(
            torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        )
        exemplars.append(
            torch.randint(0, 256, (3, eh, ew), generator=g, dtype=torch.uint8)
        )
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.5
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.1) * torch.tensor([w, h])
        sample = DetDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)
            )
        )
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], -1),
            labels=torch.zeros(n, dtype=torch.long),
        )
        samples.append(sample)
    return dict(
        inputs=dict(target=targets, exemplar=exemplars), data_samples=samples
    )
