"""mmpretrain-side builders for tests and checks (``xattn_mm.testing``
imports no host beyond mmdet)."""

import torch

TINY_VIT = dict(
    type='mmpretrain.VisionTransformer',
    arch=dict(
        embed_dims=32, num_layers=2, num_heads=4, feedforward_channels=64
    ),
    img_size=32,
    patch_size=8,
)
"""A ViT small enough for CPU runs of the mmpretrain configs (32 px)."""


def write_tiny_vit_checkpoint(path: str, seed: int = 11) -> str:
    """A randomly initialised :data:`TINY_VIT` saved as a classifier
    checkpoint (``backbone.`` keys), as the ViT converter writes them: the
    'pretrained' weights of the tiny StochCA runs.

    Args:
        path (str): Output file.
        seed (int): Initialisation seed. Defaults to 11.

    Returns:
        str: ``path``.
    """
    from mmpretrain.registry import MODELS

    import xattn_mm.cls  # noqa: F401  (mmpretrain's registries)

    torch.manual_seed(seed)
    vit = MODELS.build(TINY_VIT)
    vit.init_weights()
    state = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    torch.save({'state_dict': state}, path)
    return str(path)
