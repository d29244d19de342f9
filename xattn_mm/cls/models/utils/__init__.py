from .cross_scale import rescale_images

__all__ = ['rescale_images']
