"""Shipped configs made CPU-sized for runs in tests and the checks in
tools/analysis_tools: :func:`shrink` for a model, :func:`write_shrunk_config`
for a whole classification config."""

from typing import Optional

from mmengine.config import Config

# ---- shrinking a shipped config for CPU tests ----------------------------
# One rule per model family and backbone; ``shrink`` raises on a type it has
# no rule for, so that a new family gets one instead of a silent full-size
# build.
DIMS = 32  # transformer channels of every shrunk model
TINY_VIT = dict(
    embed_dims=DIMS, num_layers=2, num_heads=4, feedforward_channels=64
)
CLS_SIZE = 32  # image side of the shrunk classifiers
SEG_SIZE = 64  # image side of the shrunk segmentors
DET_VIT_SIZE = 64  # image side of a ViT inside a detector


def shrink(model: dict) -> dict:
    """A shipped config's ``model`` made small enough to build and train a
    step on a CPU: small dims, few layers, small images and random weights
    (every ``init_cfg`` dropped); its types, heads, losses and switches are
    kept. Changes ``model`` in place and returns it.

    Sizes: classifiers take 32 x 32 images, segmentors 64 x 64; detectors
    take any size (:func:`xattn_mm.testing.one_shot.one_shot_batch`).

    Args:
        model (dict): ``cfg.model`` (a ``ConfigDict`` or dict).

    Returns:
        dict: ``model``.

    Raises:
        ValueError: A model or backbone type without a rule.
    """
    kind = model['type'].split('.')[-1]
    if kind == 'IADETR':
        _shrink_detector(model)
    elif kind in (
        'ImageClassifier',
        'RegularizedImageClassifier',
        'UDAClassifier',
    ):
        _shrink_vit(_inner_backbone(model['backbone']), CLS_SIZE)
        model['head']['in_channels'] = DIMS
    elif kind in ('EncoderDecoder', 'TMTEncoderDecoder'):
        _shrink_segmentor(model)
    else:
        raise ValueError(f'shrink has no rule for model type {kind!r}.')
    return model


def _inner_backbone(backbone: dict) -> dict:
    """The backbone StochCA wraps, or the backbone itself."""
    if backbone['type'].split('.')[-1] == 'StochCA':
        backbone.pop('init_cfg', None)
        return backbone['backbone']
    return backbone


def _shrink_vit(
    vit: dict, size: int, num_layers: int = 2, patch_size: int = 8
) -> None:
    kind = vit['type'].split('.')[-1]
    if kind not in ('VisionTransformer', 'DAT'):
        raise ValueError(f'shrink has no rule for ViT type {kind!r}.')
    vit.pop('init_cfg', None)
    vit.update(img_size=size, patch_size=patch_size)
    if vit['type'].startswith('mmseg.') or 'arch' not in vit:
        # mmseg's VisionTransformer: sizes as arguments.
        vit.update(embed_dims=DIMS, num_layers=num_layers, num_heads=2)
    else:
        vit['arch'] = dict(TINY_VIT, num_layers=num_layers)


def _shrink_detector(model: dict) -> None:
    heads = 4
    backbone = model['backbone']
    kind = backbone['type'].split('.')[-1]
    backbone.pop('init_cfg', None)
    neck = model['neck']
    if kind == 'StochCA':
        vit = _inner_backbone(backbone)
        # the patch size is the detector's feature stride: kept
        _shrink_vit(vit, DET_VIT_SIZE, patch_size=vit['patch_size'])
        mapper = neck
        mapper['in_channels'] = [DIMS]
    elif kind == 'GlobalSwinTransformerV2':
        backbone.update(
            arch=dict(
                embed_dims=16,
                depths=[2, 2, 2, 2],
                num_heads=[1, 2, 2, 4],
                extra_norm_every_n_blocks=0,
            ),
            window_size=4,
            pretrained_window_sizes=[4, 4, 4, 2],
        )
        neck['necks'][0]['in_channels'] = 128  # 8 x the stem
        mapper = neck['necks'][1]
        mapper['in_channels'] = [64]
    elif kind == 'ResNet':
        backbone.update(depth=18, base_channels=16)
        mapper = neck
        stages = backbone.get('num_stages', 4)
        mapper['in_channels'] = [16 * 2 ** (stages - 1)]
    else:
        raise ValueError(f'shrink has no rule for detector backbone {kind!r}.')
    mapper.update(out_channels=DIMS, norm_cfg=dict(type='GN', num_groups=8))
    model['positional_encoding']['num_feats'] = DIMS // 2
    decoder = model['decoder']
    layer = decoder['layer_cfg']
    layer['self_attn_cfg'].update(embed_dims=DIMS, num_heads=heads)
    layer['cross_attn_cfg'].update(
        embed_dims=DIMS, num_heads=heads, rpb_hidden_dims=16
    )
    layer['ffn_cfg']['feedforward_channels'] = 64
    decoder['num_layers'] = 2
    if 'num_align_layers' in decoder:
        decoder['num_align_layers'] = 1
    if model.get('encoder'):
        model['encoder']['num_layers'] = 1
        enc = model['encoder']['layer_cfg']
        enc['self_attn_cfg'].update(embed_dims=DIMS, num_heads=heads)
        enc['cross_attn_cfg'].update(embed_dims=DIMS, num_heads=heads)
        enc['ffn_cfg'].update(embed_dims=DIMS, feedforward_channels=64)
    model.update(num_queries=10, num_queries_one2many=20)
    model['bbox_head']['embed_dims'] = DIMS
    model['test_cfg']['max_per_img'] = 10


def _shrink_segmentor(model: dict) -> None:
    bn = dict(type='BN', requires_grad=True)
    backbone = model['backbone']
    _shrink_vit(backbone, SEG_SIZE, num_layers=4)
    backbone.update(img_size=(SEG_SIZE, SEG_SIZE), out_indices=(0, 1, 2, 3))
    if model['neck']['type'] == 'TMANeck':
        model['neck'].update(
            in_channels=[DIMS] * 4, num_heads=2, pyramid_norm_cfg=bn
        )
        model['source_checkpoint'] = None
    else:
        model['neck'].update(embed_dim=DIMS, norm_cfg=bn)
    model['decode_head'].update(
        in_channels=[DIMS] * 4, channels=16, pool_scales=(1, 2), norm_cfg=bn
    )
    model['auxiliary_head'].update(in_channels=DIMS, channels=16, norm_cfg=bn)
    model['test_cfg'] = dict(mode='whole')


def _rescale_pipelines(node, factor: float) -> None:
    """Scale the ``scale`` / ``crop_size`` of every transform in every
    pipeline under ``node`` (a config tree) by ``factor``."""

    def side(value):
        if isinstance(value, (list, tuple)):
            return type(value)(side(v) for v in value)
        return max(1, round(value * factor))

    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'pipeline' or key.endswith('_pipeline'):
                for transform in value:
                    for name in ('scale', 'crop_size'):
                        if name in transform:
                            transform[name] = side(transform[name])
            else:
                _rescale_pipelines(value, factor)
    elif isinstance(node, list):
        for item in node:
            _rescale_pipelines(item, factor)


def write_shrunk_config(
    src: str, dst: str, pretrained: Optional[str] = None
) -> str:
    """Write a shipped classification config shrunk for a CPU run: its
    model by :func:`shrink` (the tiny ViT, ``CLS_SIZE`` px), every
    pipeline's image sizes scaled by the same factor as the model's
    (224 or 448 px to 32; a 550 px resize to 39), no loader workers. The
    augmentation, datasets, schedule and hooks stay the shipped ones; a
    config inheriting ``dst`` overrides what a run needs (data roots,
    iterations).

    Args:
        src (str): A config under ``configs/`` with a ViT classifier.
        dst (str): Where to write the shrunk config.
        pretrained (str, optional): Tiny ViT weights
            (:func:`~xattn_mm.testing.checkpoints.write_tiny_vit_checkpoint`)
            the (inner) ViT loads; random initialisation if None.

    Returns:
        str: ``dst``.
    """
    cfg = Config.fromfile(src)
    vit = _inner_backbone(cfg.model['backbone'])
    factor = CLS_SIZE / vit['img_size']
    shrink(cfg.model)
    if pretrained is not None:
        vit['init_cfg'] = dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.'
        )
    _rescale_pipelines(cfg._cfg_dict, factor)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader:
            loader.update(num_workers=0, persistent_workers=False)
    cfg.dump(dst)
    return dst


def multi_domain_leaf(base: str, data_root: str) -> str:
    """Config text over ``base`` (a shrunk DomainBed config, from
    :func:`write_shrunk_config`) on the three domains of
    :func:`~xattn_mm.testing.make_multi_domain_folder`, 'sketch' held out;
    schedule and hooks are left to the caller."""
    return f"""_base_ = '{base}'
data = dict(
    data_root='{data_root}',
    domains=['photo', 'sketch', 'cartoon'],
    test_domain='sketch',
)
train_dataloader = dict(batch_size=4, dataset=data)
val_dataloader = dict(batch_size=16, dataset=data)
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(num_classes=3), head=dict(num_classes=3))
"""
