from .regularized import (
    BSSRegularizer,
    L2SPRegularizer,
    RegularizedImageClassifier,
)
from .uda import UDAClassifier

__all__ = [
    'BSSRegularizer',
    'L2SPRegularizer',
    'RegularizedImageClassifier',
    'UDAClassifier',
]
