from .exemplar_augment import (
    ExemplarColorJitter,
    RandomGaussianBlur,
    RandomPerspective,
    adjust_color_jitter,
    gaussian_blur,
    warp_perspective,
)
from .one_shot import CropExemplar, PackOneShotInputs, RandomPatchExemplar

__all__ = [
    'CropExemplar',
    'ExemplarColorJitter',
    'PackOneShotInputs',
    'RandomGaussianBlur',
    'RandomPatchExemplar',
    'RandomPerspective',
    'adjust_color_jitter',
    'gaussian_blur',
    'warp_perspective',
]
