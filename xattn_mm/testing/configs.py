"""Config text for CPU-sized runs of the project's configs (tests and the
checks in tools/analysis_tools)."""

TINY_VIT_ARCH = (
    'dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=4, '
    'feedforward_channels=64)'
)
"""The configs name the ViT arch 'b'; this dict replaces it."""


def tiny_vit_backbone(stoch_ca: bool, pretrained: str) -> str:
    """``model.backbone`` text: the tiny ViT (32 px, patch 8) from
    ``pretrained``, inside StochCA's ``backbone`` when ``stoch_ca``."""
    vit = (
        f'dict(arch={TINY_VIT_ARCH}, img_size=32, patch_size=8, init_cfg=dict('
        f"type='Pretrained', checkpoint='{pretrained}', prefix='backbone.'))"
    )
    return f'dict(backbone={vit})' if stoch_ca else vit


def tiny_domainbed_config(
    base: str, data_root: str, pretrained: str, stoch_ca: bool
) -> str:
    """A DomainBed config (``base``) on the three-domain folder of
    :func:`~xattn_mm.testing.make_multi_domain_folder` at 32 px, its
    augmentation kept, with the tiny ViT; schedule and hooks are left to
    the caller.

    Args:
        base (str): Path of a ``configs/stoch_ca/domain_generalization``
            config.
        data_root (str): The folder.
        pretrained (str): Tiny ViT weights
            (:func:`~xattn_mm.testing.checkpoints.write_tiny_vit_checkpoint`).
        stoch_ca (bool): Whether ``base`` is a StochCA config.

    Returns:
        str: Config text.
    """
    return f"""_base_ = '{base}'
data_root = '{data_root}'
domains = ['photo', 'sketch', 'cartoon']
test_domain = 'sketch'
num_classes = 3
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.7, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='HueWrapColorJitter', brightness=0.3, contrast=0.3,
         saturation=0.3, hue=0.3),
    dict(type='RandomGrayscale', prob=0.1, keep_channels=True),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]
data = dict(data_root=data_root, domains=domains, test_domain=test_domain)
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(
    batch_size=4, dataset=dict(pipeline=train_pipeline, **data), **loader
)
val_dataloader = dict(
    batch_size=16, dataset=dict(pipeline=test_pipeline, **data), **loader
)
test_dataloader = val_dataloader
model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    backbone={tiny_vit_backbone(stoch_ca, pretrained)},
    head=dict(num_classes=num_classes, in_channels=32),
)
"""
