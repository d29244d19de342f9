"""Resizing a ViT position embedding as torchvision does."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def interpolate_pos_embed(
    pos_embed: Tensor, dst_grid: int, num_extra_tokens: int = 1
) -> Tensor:
    """Resize a square-grid position embedding to ``dst_grid`` x
    ``dst_grid`` as torchvision's ``interpolate_embeddings`` does (what the
    official StochCA code runs for its 448 px transfer models): the extra
    (class) tokens kept, the grid resized with bicubic interpolation and
    ``align_corners=True``. mmpretrain's load-time resize
    (``resize_pos_embed``) uses ``align_corners=False``: the two differ by
    up to 0.16 on the smooth unit-scale embedding of the converter test.

    Args:
        pos_embed (Tensor): (1, num_extra_tokens + g * g, C).
        dst_grid (int): The new side g'.
        num_extra_tokens (int): Leading tokens outside the grid. Defaults
            to 1 (the class token).

    Returns:
        Tensor: (1, num_extra_tokens + g' * g', C), the input's dtype.

    Raises:
        ValueError: The tokens after the extra ones are not a square grid.
    """
    extra, grid = (
        pos_embed[:, :num_extra_tokens],
        pos_embed[:, num_extra_tokens:],
    )
    side = math.isqrt(grid.shape[1])
    if pos_embed.dim() != 3 or side * side != grid.shape[1]:
        raise ValueError(
            'pos_embed must be (1, extra + g * g, C) with a square grid, got '
            f'shape {tuple(pos_embed.shape)} with {num_extra_tokens} extra '
            'tokens.'
        )
    grid = grid.transpose(1, 2).unflatten(-1, (side, side))
    grid = F.interpolate(
        grid.float(),
        size=(dst_grid, dst_grid),
        mode='bicubic',
        align_corners=True,
    )
    grid = grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([extra, grid], dim=1)
