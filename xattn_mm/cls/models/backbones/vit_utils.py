"""Helpers over mmpretrain's ViT building blocks, shared by the backbones
that rewire its blocks (StochCA, DAT): which ViTs they support, the token
embedding up to the first block, and slices of the packed qkv projection."""

from typing import Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import (
    DistilledVisionTransformer,
    VisionTransformer,
)
from mmpretrain.models.backbones.vision_transformer import (
    TransformerEncoderLayer,
)
from mmpretrain.models.utils import MultiheadAttention, resize_pos_embed
from torch import Tensor, nn

# Forwards whose token embedding ``embed_tokens`` reproduces exactly.
_KNOWN_FORWARDS = (
    VisionTransformer.forward,
    DistilledVisionTransformer.forward,
)


def check_supported_backbone(vit: nn.Module, user: str) -> None:
    """Raise unless ``vit`` is a ViT whose blocks ``user`` can rewire.

    Supported: mmpretrain's :class:`VisionTransformer` (every ViT / DeiT
    arch, with or without the CLIP-style ``pre_norm``) and
    :class:`DistilledVisionTransformer`, built of the host's
    ``TransformerEncoderLayer`` with its ``MultiheadAttention``.

    Args:
        vit (nn.Module): The built backbone.
        user (str): The rewiring module, named in the errors.

    Raises:
        TypeError: For any other backbone, block or attention type.
    """
    name = type(vit).__name__
    if (
        not isinstance(vit, VisionTransformer)
        or type(vit).forward not in _KNOWN_FORWARDS
    ):
        raise TypeError(
            f'{user} wraps mmpretrain VisionTransformer or '
            f'DistilledVisionTransformer backbones, got {name}.'
        )
    if isinstance(vit, DistilledVisionTransformer) and not isinstance(
        vit.pre_norm, nn.Identity
    ):
        raise TypeError(
            f'{user} does not support DistilledVisionTransformer with '
            'pre_norm=True: the host forward never applies that norm.'
        )
    for i, layer in enumerate(vit.layers):
        if type(layer) is not TransformerEncoderLayer:
            raise TypeError(
                f'{user} needs TransformerEncoderLayer blocks, but {name} '
                f'block {i} is {type(layer).__name__}.'
            )
        if type(layer.attn) is not MultiheadAttention or layer.attn.v_shortcut:
            raise TypeError(
                f'{user} needs MultiheadAttention without v_shortcut in '
                f'every block, but {name} block {i} has '
                f'{type(layer.attn).__name__}.'
            )


def embed_tokens(vit: VisionTransformer, x: Tensor) -> Tuple[Tensor, tuple]:
    """The host forward up to the first block: patches, extra tokens,
    position embedding, dropout and (CLIP-style) pre-norm.

    Args:
        vit (VisionTransformer): A supported backbone.
        x (Tensor): Images, shape (B, 3, H, W).

    Returns:
        tuple: Tokens of shape (B, num_extra_tokens + h * w, C) and the
        patch resolution (h, w).
    """
    batch = x.shape[0]
    x, patch_resolution = vit.patch_embed(x)
    extra = [] if vit.cls_token is None else [vit.cls_token]
    if isinstance(vit, DistilledVisionTransformer):
        extra.append(vit.dist_token)
    x = torch.cat([t.expand(batch, -1, -1) for t in extra] + [x], dim=1)
    x = x + resize_pos_embed(
        vit.pos_embed,
        vit.patch_resolution,
        patch_resolution,
        mode=vit.interpolate_mode,
        num_extra_tokens=vit.num_extra_tokens,
    )
    return vit.pre_norm(vit.drop_after_pos(x)), patch_resolution


def packed_projection(
    attn: MultiheadAttention, x: Tensor, rows: slice
) -> Tensor:
    """Some rows of a host attention's packed ``qkv`` projection (queries
    0..C, keys C..2C, values 2C..3C), without computing the others.

    Args:
        attn (MultiheadAttention): The block's attention.
        x (Tensor): The block's LN1 output, shape (B, N, C).
        rows (slice): Output channels of ``qkv`` to compute.

    Returns:
        Tensor: Shape (B, N, len(rows)).
    """
    bias = attn.qkv.bias
    return F.linear(
        x, attn.qkv.weight[rows], None if bias is None else bias[rows]
    )


def project_keys_values(
    attn: MultiheadAttention, x: Tensor
) -> Tuple[Tensor, Tensor]:
    """Keys and values of a host attention, each (B, N, C)."""
    keys_values = packed_projection(attn, x, slice(attn.embed_dims, None))
    return keys_values.chunk(2, dim=-1)
