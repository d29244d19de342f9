from .cross_scale import rescale_images
from .pos_embed import interpolate_pos_embed

__all__ = ['interpolate_pos_embed', 'rescale_images']
