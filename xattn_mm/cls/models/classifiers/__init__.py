from .regularized import (
    BSSRegularizer,
    L2SPRegularizer,
    MIRORegularizer,
    RegularizedImageClassifier,
)
from .uda import UDAClassifier

__all__ = [
    'BSSRegularizer',
    'L2SPRegularizer',
    'MIRORegularizer',
    'RegularizedImageClassifier',
    'UDAClassifier',
]
