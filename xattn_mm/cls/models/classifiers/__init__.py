from .regularized import (
    BSSRegularizer,
    L2SPRegularizer,
    RegularizedImageClassifier,
)

__all__ = ['BSSRegularizer', 'L2SPRegularizer', 'RegularizedImageClassifier']
