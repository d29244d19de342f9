from .exemplar_augment import (
    RandomPerspective,
    warp_perspective,
)
from .one_shot import CropExemplar, PackOneShotInputs, RandomPatchExemplar

__all__ = [
    'CropExemplar',
    'PackOneShotInputs',
    'RandomPatchExemplar',
    'RandomPerspective',
    'warp_perspective',
]
