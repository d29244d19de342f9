from .regularized import (
    BSSRegularizer,
    L2SPRegularizer,
    RegularizedImageClassifier,
)
from .uda import UDAClassifier, UDADataPreprocessor

__all__ = [
    'BSSRegularizer',
    'L2SPRegularizer',
    'RegularizedImageClassifier',
    'UDAClassifier',
    'UDADataPreprocessor',
]
