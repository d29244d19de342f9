"""Cross-scale matching's image zoom (DACSM, CSM head)."""

import torch
import torch.nn.functional as F
from torch import Tensor


def rescale_images(images: Tensor, factors: Tensor) -> Tensor:
    """Zoom every image about its centre, keeping its size: a factor above
    1 enlarges the content (the borders leave the frame), below 1 shrinks
    it (zero padding, i.e. the mean colour of normalised images).

    Which images to zoom is decided on the CPU, before anything is copied
    to the images' device, so the call makes no host-device sync.

    Args:
        images (Tensor): Normalised images, (B, C, H, W).
        factors (Tensor): Float (B,) on the CPU, one zoom factor per image.

    Returns:
        Tensor: (B, C, H, W); images with factor 1 are returned untouched.
    """
    factors = factors.cpu()
    zoom = (factors != 1).nonzero()[:, 0]
    if not len(zoom):
        return images
    theta = torch.zeros(len(zoom), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / factors[zoom]
    device = images.device
    zoom = zoom.to(device, non_blocking=True)
    selected = images.index_select(0, zoom)
    grid = F.affine_grid(
        theta.to(device, images.dtype, non_blocking=True),
        list(selected.shape),
        align_corners=False,
    )
    return images.index_copy(
        0,
        zoom,
        F.grid_sample(selected, grid, mode='bilinear', align_corners=False),
    )
